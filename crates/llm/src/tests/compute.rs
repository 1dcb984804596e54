//! [`LoadOptions::compute`]: the decoder's products on bf16 inputs.

use auris_kernels::round::Compute;

use super::*;

fn load_compute(
    cfg: &Qwen2Config,
    w: &HashMap<String, Tensor>,
    weights: WeightFormat,
    compute: Compute,
) -> Qwen2Decoder {
    let vb = VarBuilder::from_tensors(w.clone(), DType::F32, &Device::Cpu);
    Qwen2Decoder::load_with(cfg, vb.pp(PREFIX), &LoadOptions { weights, compute }).unwrap()
}

/// The prefill (multi-row products, the fused attention) and the decode steps (single-row
/// kernels, the unfused attention over the cache) both round under bf16: a prompt prefilled
/// whole and the same prompt fed one token at a time end on the same logits, up to a bf16
/// step where summation order tips a rounding (0.2 % of the largest logit), while bf16 and
/// f32 compute differ by more than twice that (a path that forgot to round would sit
/// between them). f32 weights are stored bf16 under bf16 compute; block formats keep theirs.
#[test]
fn bf16_compute_rounds_prefill_and_decode_alike() {
    let cfg = storage_cfg();
    let w = weights(&cfg, 5);
    let exact = load_compute(&cfg, &w, WeightFormat::F32, Compute::F32);
    let bf16 = load_compute(&cfg, &w, WeightFormat::F32, Compute::Bf16);
    assert_eq!(
        (exact.compute(), bf16.compute()),
        (Compute::F32, Compute::Bf16)
    );
    assert_eq!(bf16.weight_format(), WeightFormat::Bf16);
    let q8 = load_compute(&cfg, &w, WeightFormat::Q8_0, Compute::Bf16);
    assert_eq!(q8.weight_format(), WeightFormat::Q8_0);

    let xs = embeds(&cfg, 1, 9, 13);
    let whole = bf16.forward_embeds(&xs, &mut bf16.new_cache()).unwrap();
    let mut cache = bf16.new_cache();
    let mut stepped = None;
    for i in 0..9 {
        let x = xs.narrow(1, i, 1).unwrap();
        stepped = Some(bf16.forward_embeds(&x, &mut cache).unwrap());
    }
    let stepped = stepped.unwrap();
    let f32_logits = exact.forward_embeds(&xs, &mut exact.new_cache()).unwrap();
    let scale = max_abs(&whole).max(1.0);
    let (paths, gap) = (max_diff(&whole, &stepped), max_diff(&whole, &f32_logits));
    assert!(
        paths <= 2e-3 * scale,
        "prefill vs steps {paths} (scale {scale})"
    );
    assert!(
        gap >= 5e-3 * scale,
        "bf16 vs f32 only {gap} (scale {scale})"
    );
}
