//! Deterministic test data shared by the kernel and layer tests.

/// `len` values in [-1, 1) from an xorshift stream seeded by `seed`.
pub(crate) fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// [`values`] with every 97th value multiplied by `scale`: a few outliers, like trained
/// weights, which stress the per-block scales of the quantised formats.
pub(crate) fn with_outliers(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut v = values(len, seed);
    for x in v.iter_mut().step_by(97) {
        *x *= scale;
    }
    v
}
