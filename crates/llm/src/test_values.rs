//! Deterministic test data shared by the kernel and layer tests.

pub(crate) use auris_kernels::test_values::values;

/// [`values`] with every 97th value multiplied by `scale`: a few outliers, like trained
/// weights, which stress the per-block scales of the quantised formats.
pub(crate) fn with_outliers(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut v = values(len, seed);
    for x in v.iter_mut().step_by(97) {
        *x *= scale;
    }
    v
}
