//! Decoder tests on tiny random weights.

use std::collections::HashMap;

use auris_kernels::test_values::on_threads;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::*;

const PREFIX: &str = "language_model";

fn tiny_cfg() -> Qwen2Config {
    Qwen2Config {
        vocab_size: 40,
        hidden_size: 16,
        intermediate_size: 24,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: Some(2),
        rms_norm_eps: 1e-6,
        max_position_embeddings: 128,
        ..Default::default()
    }
}

/// Deterministic values in `[-scale, scale)` (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn tensor(&mut self, shape: &[usize], scale: f32, offset: f32) -> Tensor {
        let n = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|_| offset + scale * self.next()).collect();
        Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
    }
}

/// A full checkpoint for `cfg` under [`PREFIX`], `lm_head` included.
fn weights(cfg: &Qwen2Config, seed: u64) -> HashMap<String, Tensor> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (q_out, kv_out) = (
        cfg.num_attention_heads * cfg.head_dim(),
        cfg.num_kv_heads() * cfg.head_dim(),
    );
    let mut w = HashMap::new();
    let mut put = |name: String, shape: &[usize], scale: f32, offset: f32| {
        w.insert(format!("{PREFIX}.{name}"), rng.tensor(shape, scale, offset));
    };
    put("model.embed_tokens.weight".into(), &[v, h], 1.0, 0.0);
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        put(
            format!("{p}.self_attn.q_proj.weight"),
            &[q_out, h],
            0.4,
            0.0,
        );
        put(format!("{p}.self_attn.q_proj.bias"), &[q_out], 0.2, 0.0);
        put(
            format!("{p}.self_attn.k_proj.weight"),
            &[kv_out, h],
            0.4,
            0.0,
        );
        put(format!("{p}.self_attn.k_proj.bias"), &[kv_out], 0.2, 0.0);
        put(
            format!("{p}.self_attn.v_proj.weight"),
            &[kv_out, h],
            0.4,
            0.0,
        );
        put(format!("{p}.self_attn.v_proj.bias"), &[kv_out], 0.2, 0.0);
        put(
            format!("{p}.self_attn.o_proj.weight"),
            &[h, q_out],
            0.3,
            0.0,
        );
        put(format!("{p}.mlp.gate_proj.weight"), &[i, h], 0.3, 0.0);
        put(format!("{p}.mlp.up_proj.weight"), &[i, h], 0.3, 0.0);
        put(format!("{p}.mlp.down_proj.weight"), &[h, i], 0.3, 0.0);
        put(format!("{p}.input_layernorm.weight"), &[h], 0.2, 1.0);
        put(
            format!("{p}.post_attention_layernorm.weight"),
            &[h],
            0.2,
            1.0,
        );
    }
    put("model.norm.weight".into(), &[h], 0.2, 1.0);
    put("lm_head.weight".into(), &[v, h], 0.5, 0.0);
    w
}

fn load(cfg: &Qwen2Config, w: &HashMap<String, Tensor>, dtype: DType) -> Qwen2Decoder {
    try_load(cfg, w, dtype).unwrap()
}

fn try_load(
    cfg: &Qwen2Config,
    w: &HashMap<String, Tensor>,
    dtype: DType,
) -> Result<Qwen2Decoder, LlmError> {
    let vb = VarBuilder::from_tensors(w.clone(), dtype, &Device::Cpu);
    Qwen2Decoder::load(cfg, vb.pp(PREFIX))
}

/// The tiny configuration and a model of it in f32, its weights drawn from `seed`.
fn tiny_model(seed: u64) -> (Qwen2Config, Qwen2Decoder) {
    let cfg = tiny_cfg();
    let model = load(&cfg, &weights(&cfg, seed), DType::F32);
    (cfg, model)
}

fn embeds(cfg: &Qwen2Config, b: usize, s: usize, seed: u64) -> Tensor {
    Rng(seed | 1).tensor(&[b, s, cfg.hidden_size], 1.0, 0.0)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    max_abs(&(a - b).unwrap())
}

fn to_vec2(t: &Tensor) -> Vec<Vec<f64>> {
    t.to_dtype(DType::F64).unwrap().to_vec2().unwrap()
}

fn to_vec1(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).unwrap().to_vec1().unwrap()
}

/// A scalar, f64, loop-per-formula transcription of `Qwen2ForCausalLM` for one sequence
/// (no cache), to check the tensor code's layouts: weight orientation, RoPE halves, GQA head
/// mapping, mask and norm placement. One function on purpose (over 80 lines): it reads top to
/// bottom as the model's formulas and shares no helper with the code it checks.
fn naive_logits(cfg: &Qwen2Config, w: &HashMap<String, Tensor>, xs: &Tensor) -> Vec<Vec<f64>> {
    let get2 = |n: &str| to_vec2(&w[&format!("{PREFIX}.{n}")]);
    let get1 = |n: &str| to_vec1(&w[&format!("{PREFIX}.{n}")]);
    let matvec = |m: &[Vec<f64>], x: &[f64]| -> Vec<f64> {
        m.iter()
            .map(|row| row.iter().zip(x).map(|(a, b)| a * b).sum())
            .collect()
    };
    let rms = |x: &[f64], wt: &[f64]| -> Vec<f64> {
        let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
        let inv = 1.0 / (ms + cfg.rms_norm_eps).sqrt();
        x.iter().zip(wt).map(|(v, g)| v * inv * g).collect()
    };
    let hd = cfg.head_dim();
    let (nh, nkv) = (cfg.num_attention_heads, cfg.num_kv_heads());
    let rope = |x: &mut [f64], pos: usize| {
        let half = hd / 2;
        for i in 0..half {
            let inv_freq = 1.0 / cfg.rope_theta().powf((2 * i) as f64 / hd as f64);
            let (c, s) = ((pos as f64 * inv_freq).cos(), (pos as f64 * inv_freq).sin());
            let (x1, x2) = (x[i], x[i + half]);
            x[i] = x1 * c - x2 * s;
            x[i + half] = x2 * c + x1 * s;
        }
    };
    let mut hs: Vec<Vec<f64>> = to_vec2(&xs.squeeze(0).unwrap());
    let seq = hs.len();
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        let lin = |name: &str, x: &[f64], bias: bool| -> Vec<f64> {
            let mut y = matvec(&get2(&format!("{p}.{name}.weight")), x);
            if bias {
                for (y, b) in y.iter_mut().zip(get1(&format!("{p}.{name}.bias"))) {
                    *y += b;
                }
            }
            y
        };
        let normed: Vec<Vec<f64>> = hs
            .iter()
            .map(|x| rms(x, &get1(&format!("{p}.input_layernorm.weight"))))
            .collect();
        let mut q = Vec::new();
        let mut k = Vec::new();
        let mut v = Vec::new();
        for (pos, x) in normed.iter().enumerate() {
            let mut qp = lin("self_attn.q_proj", x, true);
            let mut kp = lin("self_attn.k_proj", x, true);
            for h in 0..nh {
                rope(&mut qp[h * hd..(h + 1) * hd], pos);
            }
            for h in 0..nkv {
                rope(&mut kp[h * hd..(h + 1) * hd], pos);
            }
            q.push(qp);
            k.push(kp);
            v.push(lin("self_attn.v_proj", x, true));
        }
        let window = cfg.layer_window(l);
        for pos in 0..seq {
            let mut out = vec![0.0; nh * hd];
            for h in 0..nh {
                let kvh = h / (nh / nkv);
                let keys: Vec<usize> = (0..=pos)
                    .filter(|&j| window.is_none_or(|w| j + w > pos))
                    .collect();
                let scores: Vec<f64> = keys
                    .iter()
                    .map(|&j| {
                        (0..hd)
                            .map(|d| q[pos][h * hd + d] * k[j][kvh * hd + d])
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = exps.iter().sum();
                for (e, &j) in exps.iter().zip(&keys) {
                    for d in 0..hd {
                        out[h * hd + d] += e / total * v[j][kvh * hd + d];
                    }
                }
            }
            let o = lin("self_attn.o_proj", &out, false);
            for (x, o) in hs[pos].iter_mut().zip(o) {
                *x += o;
            }
            let x2 = rms(
                &hs[pos],
                &get1(&format!("{p}.post_attention_layernorm.weight")),
            );
            let gate = lin("mlp.gate_proj", &x2, false);
            let up = lin("mlp.up_proj", &x2, false);
            let act: Vec<f64> = gate
                .iter()
                .zip(&up)
                .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            let down = lin("mlp.down_proj", &act, false);
            for (x, d) in hs[pos].iter_mut().zip(down) {
                *x += d;
            }
        }
    }
    let head = if cfg.tie_word_embeddings {
        get2("model.embed_tokens.weight")
    } else {
        get2("lm_head.weight")
    };
    hs.iter()
        .map(|x| matvec(&head, &rms(x, &get1("model.norm.weight"))))
        .collect()
}

fn assert_close_to_naive(logits: &Tensor, naive: &[Vec<f64>], tol: f64) {
    let ours = to_vec2(&logits.squeeze(0).unwrap());
    for (row_a, row_b) in ours.iter().zip(naive) {
        for (a, b) in row_a.iter().zip(row_b) {
            assert!((a - b).abs() <= tol, "{a} vs {b}");
        }
    }
}

#[test]
fn matches_naive_transcription() {
    let cfg = tiny_cfg();
    let w = weights(&cfg, 1);
    let model = load(&cfg, &w, DType::F32);
    let xs = embeds(&cfg, 1, 6, 11);
    let logits = model
        .forward_embeds_all(&xs, &mut model.new_cache())
        .unwrap();
    assert_eq!(logits.dims(), &[1, 6, cfg.vocab_size]);
    assert_eq!(logits.dtype(), DType::F32);
    assert_close_to_naive(&logits, &naive_logits(&cfg, &w, &xs), 1e-4);
}

#[test]
fn chunked_prefill_matches_the_whole_prompt_at_once() {
    let sliding = Qwen2Config {
        use_sliding_window: true,
        sliding_window: Some(5),
        max_window_layers: 1,
        ..tiny_cfg()
    };
    for cfg in [tiny_cfg(), sliding] {
        let model = load(&cfg, &weights(&cfg, 5), DType::F32);
        // Odd sizes: chunks that divide the prompt, that leave a short last chunk, of one
        // position, and after positions already cached.
        let (prefix, xs) = (embeds(&cfg, 2, 3, 21), embeds(&cfg, 2, 23, 22));
        let next = embeds(&cfg, 2, 1, 23);
        let run = |chunk: usize| {
            let mut cache = model.new_cache();
            model.forward_chunked(&prefix, &mut cache, chunk).unwrap();
            let hidden = model.forward_chunked(&xs, &mut cache, chunk).unwrap();
            assert_eq!(cache.len(), 26);
            let logits = model.forward_embeds(&next, &mut cache).unwrap();
            (hidden, logits)
        };
        let (whole, whole_next) = run(usize::MAX);
        for chunk in [1, 2, 7, 22, 23] {
            let (hidden, logits) = run(chunk);
            assert!(max_diff(&hidden, &whole) < 1e-5, "chunk {chunk}");
            assert!(max_diff(&logits, &whole_next) < 1e-4, "chunk {chunk}");
        }
    }
}

#[test]
fn matches_naive_with_sliding_window_and_explicit_head_dim() {
    let cfg = Qwen2Config {
        use_sliding_window: true,
        sliding_window: Some(3),
        max_window_layers: 1,
        head_dim: Some(6),
        rope_theta: 100.0,
        ..tiny_cfg()
    };
    let w = weights(&cfg, 2);
    let model = load(&cfg, &w, DType::F32);
    let xs = embeds(&cfg, 1, 7, 12);
    let logits = model
        .forward_embeds_all(&xs, &mut model.new_cache())
        .unwrap();
    assert_close_to_naive(&logits, &naive_logits(&cfg, &w, &xs), 1e-4);

    // The window matters: a full-attention model differs on the late positions...
    let full = load(
        &Qwen2Config {
            use_sliding_window: false,
            ..cfg.clone()
        },
        &w,
        DType::F32,
    );
    let full_logits = full.forward_embeds_all(&xs, &mut full.new_cache()).unwrap();
    assert!(max_diff(&full_logits, &logits) > 1e-3);
    // ...and token-by-token decoding applies the same window through the cache.
    let mut cache = model.new_cache();
    for i in 0..7 {
        let step = model
            .forward_embeds(&xs.narrow(1, i, 1).unwrap(), &mut cache)
            .unwrap();
        let row = logits.narrow(1, i, 1).unwrap().squeeze(1).unwrap();
        assert!(max_diff(&step, &row) <= 1e-5, "position {i}");
    }
}

#[test]
fn prefill_plus_decode_equals_full_forward() {
    let (cfg, model) = tiny_model(3);
    let xs = embeds(&cfg, 1, 9, 13);
    let full = model.forward_embeds(&xs, &mut model.new_cache()).unwrap();
    assert_eq!(full.dims(), &[1, cfg.vocab_size]);

    let mut cache = model.new_cache();
    model
        .forward_embeds(&xs.narrow(1, 0, 8).unwrap(), &mut cache)
        .unwrap();
    assert_eq!(cache.len(), 8);
    let step = model
        .forward_embeds(&xs.narrow(1, 8, 1).unwrap(), &mut cache)
        .unwrap();
    assert_eq!(cache.len(), 9);
    assert!(max_diff(&full, &step) <= 1e-5);

    // Uneven chunks too.
    let mut cache = model.new_cache();
    for (start, len) in [(0, 3), (3, 1), (4, 4), (8, 1)] {
        let out = model
            .forward_embeds(&xs.narrow(1, start, len).unwrap(), &mut cache)
            .unwrap();
        if start == 8 {
            assert!(max_diff(&full, &out) <= 1e-5);
        }
    }
}

#[test]
fn all_positions_agree_with_last_position() {
    let (cfg, model) = tiny_model(4);
    let xs = embeds(&cfg, 1, 5, 14);
    let all = model
        .forward_embeds_all(&xs, &mut model.new_cache())
        .unwrap();
    for s in 1..=5 {
        let last = model
            .forward_embeds(&xs.narrow(1, 0, s).unwrap(), &mut model.new_cache())
            .unwrap();
        let row = all.narrow(1, s - 1, 1).unwrap().squeeze(1).unwrap();
        assert!(max_diff(&last, &row) <= 1e-5, "prefix {s}");
    }
}

#[test]
fn truncate_and_clone_reuse_the_prompt() {
    let (cfg, model) = tiny_model(5);
    let prompt = embeds(&cfg, 1, 6, 15);
    let cont_a = embeds(&cfg, 1, 3, 16);
    let cont_b = embeds(&cfg, 1, 2, 17);

    let mut cache = model.new_cache();
    model.forward_embeds(&prompt, &mut cache).unwrap();
    let forked = cache.clone();
    let a1 = model.forward_embeds_all(&cont_a, &mut cache).unwrap();
    cache.truncate(6);
    let b1 = model.forward_embeds_all(&cont_b, &mut cache).unwrap();
    cache.truncate(6);
    let a2 = model.forward_embeds_all(&cont_a, &mut cache).unwrap();
    assert_eq!(max_diff(&a1, &a2), 0.0);

    let mut forked = forked;
    let b2 = model.forward_embeds_all(&cont_b, &mut forked).unwrap();
    assert_eq!(max_diff(&b1, &b2), 0.0);

    // And both equal running prompt + continuation from scratch.
    let whole = Tensor::cat(&[&prompt, &cont_a], 1).unwrap();
    let fresh = model
        .forward_embeds_all(&whole, &mut model.new_cache())
        .unwrap()
        .narrow(1, 6, 3)
        .unwrap();
    assert!(max_diff(&fresh, &a1) <= 1e-5);
}

#[test]
fn batch_rows_are_independent() {
    let (cfg, model) = tiny_model(6);
    let xs = embeds(&cfg, 2, 4, 18);
    let mut cache = model.new_cache();
    let both = model.forward_embeds(&xs, &mut cache).unwrap();
    let step = embeds(&cfg, 2, 1, 19);
    let both_step = model.forward_embeds(&step, &mut cache).unwrap();
    for b in 0..2 {
        let mut cache = model.new_cache();
        let one = model
            .forward_embeds(&xs.narrow(0, b, 1).unwrap(), &mut cache)
            .unwrap();
        assert!(max_diff(&one, &both.narrow(0, b, 1).unwrap()) <= 1e-5);
        let one_step = model
            .forward_embeds(&step.narrow(0, b, 1).unwrap(), &mut cache)
            .unwrap();
        assert!(max_diff(&one_step, &both_step.narrow(0, b, 1).unwrap()) <= 1e-5);
    }
    // A batch-1 continuation of a batch-2 cache is refused.
    let err = model
        .forward_embeds(&step.narrow(0, 0, 1).unwrap(), &mut cache)
        .unwrap_err();
    assert!(matches!(err, LlmError::CacheMismatch { .. }), "{err}");
    assert_eq!(cache.len(), 5);
}

#[test]
fn gqa_equals_mha_with_repeated_kv_weights() {
    let gqa_cfg = tiny_cfg();
    let w = weights(&gqa_cfg, 7);
    let mha_cfg = Qwen2Config {
        num_key_value_heads: Some(4),
        ..gqa_cfg.clone()
    };
    let hd = gqa_cfg.head_dim();
    let groups = 2;
    let mut mha_w = w.clone();
    for l in 0..gqa_cfg.num_hidden_layers {
        for proj in ["k_proj", "v_proj"] {
            for part in ["weight", "bias"] {
                let name = format!("{PREFIX}.model.layers.{l}.self_attn.{proj}.{part}");
                let t = &w[&name];
                // Query head h reads kv head h / groups: kv blocks [0, 0, 1, 1].
                let blocks: Vec<Tensor> = (0..4)
                    .map(|h| t.narrow(0, (h / groups) * hd, hd).unwrap())
                    .collect();
                mha_w.insert(name, Tensor::cat(&blocks, 0).unwrap());
            }
        }
    }
    let gqa = load(&gqa_cfg, &w, DType::F32);
    let mha = load(&mha_cfg, &mha_w, DType::F32);
    let xs = embeds(&gqa_cfg, 1, 5, 20);
    let a = gqa.forward_embeds_all(&xs, &mut gqa.new_cache()).unwrap();
    let b = mha.forward_embeds_all(&xs, &mut mha.new_cache()).unwrap();
    assert!(max_diff(&a, &b) <= 1e-5);
}

#[test]
fn tied_embeddings_reuse_embed_tokens() {
    let untied_cfg = tiny_cfg();
    let tied_cfg = Qwen2Config {
        tie_word_embeddings: true,
        ..untied_cfg.clone()
    };
    let mut w = weights(&untied_cfg, 8);
    let embed = w[&format!("{PREFIX}.model.embed_tokens.weight")].clone();
    let xs = embeds(&untied_cfg, 1, 4, 21);

    // Tied and lm_head absent.
    let lm_head = w.remove(&format!("{PREFIX}.lm_head.weight")).unwrap();
    let tied = load(&tied_cfg, &w, DType::F32);
    // Untied with lm_head = embed_tokens gives the same logits.
    let mut same = w.clone();
    same.insert(format!("{PREFIX}.lm_head.weight"), embed);
    let untied = load(&untied_cfg, &same, DType::F32);
    let a = tied.forward_embeds(&xs, &mut tied.new_cache()).unwrap();
    let b = untied.forward_embeds(&xs, &mut untied.new_cache()).unwrap();
    assert_eq!(max_diff(&a, &b), 0.0);

    // Tied ignores a stored lm_head, as transformers does.
    let mut extra = w.clone();
    extra.insert(format!("{PREFIX}.lm_head.weight"), lm_head);
    let tied2 = load(&tied_cfg, &extra, DType::F32);
    let c = tied2.forward_embeds(&xs, &mut tied2.new_cache()).unwrap();
    assert_eq!(max_diff(&a, &c), 0.0);

    // Untied without lm_head is an error naming it.
    let err = try_load(&untied_cfg, &w, DType::F32).unwrap_err();
    match &err {
        LlmError::MissingTensor { name } => assert_eq!(name, "language_model.lm_head.weight"),
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn missing_or_misshapen_tensors_are_named() {
    let cfg = tiny_cfg();
    let mut w = weights(&cfg, 9);
    let name = format!("{PREFIX}.model.layers.1.self_attn.k_proj.bias");
    let bias = w.remove(&name).unwrap();
    let err = try_load(&cfg, &w, DType::F32).unwrap_err();
    assert!(
        matches!(&err, LlmError::MissingTensor { name: n } if *n == name),
        "{err}"
    );
    assert!(err.to_string().contains(&name));

    w.insert(name.clone(), bias.narrow(0, 0, 3).unwrap());
    let err = try_load(&cfg, &w, DType::F32).unwrap_err();
    assert!(
        matches!(&err, LlmError::Load { name: n, .. } if *n == name),
        "{err}"
    );
}

#[test]
fn every_listed_tensor_is_read_and_exists() {
    let cfg = tiny_cfg();
    let w = weights(&cfg, 10);
    let mut listed: Vec<String> = Qwen2Decoder::tensor_names(&cfg)
        .into_iter()
        .map(|n| format!("{PREFIX}.{n}"))
        .collect();
    let mut stored: Vec<String> = w.keys().cloned().collect();
    listed.sort();
    stored.sort();
    assert_eq!(listed, stored);
    // Removing any listed tensor breaks loading.
    for name in &listed {
        let mut partial = w.clone();
        partial.remove(name);
        assert!(
            try_load(&cfg, &partial, DType::F32).is_err(),
            "{name} unused"
        );
    }
}

#[test]
fn bad_inputs_are_errors() {
    let (cfg, model) = tiny_model(11);
    let mut cache = model.new_cache();
    let wrong_width = Tensor::zeros((1, 2, 5), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(
        model.forward_embeds(&wrong_width, &mut cache),
        Err(LlmError::BadInput { .. })
    ));
    let empty = Tensor::zeros((1, 0, cfg.hidden_size), DType::F32, &Device::Cpu).unwrap();
    assert!(model.forward_embeds(&empty, &mut cache).is_err());
    assert_eq!(cache.len(), 0);
    let ids = Tensor::new(&[[1u32, 40]], &Device::Cpu).unwrap();
    assert!(matches!(
        model.embed_tokens(&ids),
        Err(LlmError::TokenOutOfRange {
            id: 40,
            vocab_size: 40
        })
    ));
    let ids = Tensor::new(&[[1u32, 39]], &Device::Cpu).unwrap();
    assert_eq!(
        model.embed_tokens(&ids).unwrap().dims(),
        &[1, 2, cfg.hidden_size]
    );
    let float_ids = Tensor::new(&[[1f32]], &Device::Cpu).unwrap();
    assert!(model.embed_tokens(&float_ids).is_err());
    let other = Qwen2Config {
        num_hidden_layers: 1,
        ..cfg.clone()
    };
    let small = load(&other, &weights(&cfg, 11), DType::F32);
    let xs = embeds(&cfg, 1, 2, 1);
    assert!(matches!(
        small.forward_embeds(&xs, &mut cache),
        Err(LlmError::CacheMismatch { .. })
    ));
}

#[test]
fn half_precision_runs_close_to_f32() {
    let cfg = tiny_cfg();
    let w = weights(&cfg, 12);
    let xs = embeds(&cfg, 1, 5, 22);
    let f32_model = load(&cfg, &w, DType::F32);
    let reference = f32_model
        .forward_embeds_all(&xs, &mut f32_model.new_cache())
        .unwrap();
    for dtype in [DType::F16, DType::BF16] {
        let model = load(&cfg, &w, dtype);
        let full = model
            .forward_embeds_all(&xs, &mut model.new_cache())
            .unwrap_or_else(|e| panic!("{dtype:?}: {e}"));
        assert_eq!(full.dtype(), DType::F32);
        let tol = if dtype == DType::F16 { 0.05 } else { 0.2 };
        assert!(max_diff(&full, &reference) < tol, "{dtype:?}");
        let mut cache = model.new_cache();
        model
            .forward_embeds(&xs.narrow(1, 0, 4).unwrap(), &mut cache)
            .unwrap();
        let step = model
            .forward_embeds(&xs.narrow(1, 4, 1).unwrap(), &mut cache)
            .unwrap();
        let last = full.narrow(1, 4, 1).unwrap().squeeze(1).unwrap();
        assert!(max_diff(&step, &last) < tol, "{dtype:?} cache");
    }
}

/// Greedy decoding by re-running the whole sequence each step, without a cache.
fn naive_greedy(
    model: &Qwen2Decoder,
    prompt: &Tensor,
    steps: usize,
    penalty: f32,
    ctx: &[u32],
) -> Vec<u32> {
    let mut seq = prompt.clone();
    let mut seen = ctx.to_vec();
    let mut out = Vec::new();
    for _ in 0..steps {
        let logits = model.forward_embeds(&seq, &mut model.new_cache()).unwrap();
        let mut row: Vec<f32> = logits.squeeze(0).unwrap().to_vec1().unwrap();
        crate::sampling::apply_repetition_penalty(&mut row, penalty, &seen);
        let best = row
            .iter()
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |acc, (i, &x)| if x > acc.1 { (i, x) } else { acc },
            )
            .0 as u32;
        out.push(best);
        seen.push(best);
        let ids = Tensor::new(&[[best]], &Device::Cpu).unwrap();
        seq = Tensor::cat(&[&seq, &model.embed_tokens(&ids).unwrap()], 1).unwrap();
    }
    out
}

#[test]
fn greedy_generate_matches_uncached_decoding() {
    let (_, model) = tiny_model(13);
    let ctx = [3u32, 7, 7, 1];
    let prompt = model
        .embed_tokens(&Tensor::new(&[ctx], &Device::Cpu).unwrap())
        .unwrap();
    for penalty in [1.0f32, 1.5] {
        let expect = naive_greedy(&model, &prompt, 8, penalty, &ctx);
        let opts = GenerateOptions {
            max_new_tokens: 8,
            stop_ids: vec![],
            sampling: SamplingParams {
                repetition_penalty: penalty,
                ..Default::default()
            },
        };
        let mut streamed = Vec::new();
        let mut cache = model.new_cache();
        let g = generate(&model, &mut cache, &prompt, &ctx, &opts, &mut |t| {
            streamed.push(t);
            true
        })
        .unwrap();
        assert_eq!(g.tokens, expect, "penalty {penalty}");
        assert_eq!(streamed, expect);
        assert_eq!(g.stopped_on, None);
        assert_eq!(g.margins.len(), 8);
        assert!(g.margins.iter().all(|m| *m >= 0.0));
        // The cache holds the prompt and all but the last token.
        assert_eq!(cache.len(), 4 + 7);

        // Stopping on the third token: two tokens, the stop id recorded.
        let stop = expect[2];
        let first = expect.iter().position(|&t| t == stop).unwrap_or(2);
        let opts = GenerateOptions {
            stop_ids: vec![stop],
            ..opts
        };
        let g = generate(
            &model,
            &mut model.new_cache(),
            &prompt,
            &ctx,
            &opts,
            &mut |_| true,
        )
        .unwrap();
        assert_eq!(g.tokens, expect[..first]);
        assert_eq!(g.stopped_on, Some(stop));
        assert_eq!(g.margins.len(), first + 1);

        // The callback can stop early; max_new_tokens = 0 does nothing.
        let mut count = 0;
        let g = generate(
            &model,
            &mut model.new_cache(),
            &prompt,
            &ctx,
            &opts,
            &mut |_| {
                count += 1;
                count < 1
            },
        )
        .unwrap();
        assert_eq!(g.tokens.len(), 1.min(first));
        let zero = GenerateOptions {
            max_new_tokens: 0,
            ..opts.clone()
        };
        let mut cache = model.new_cache();
        let g = generate(&model, &mut cache, &prompt, &ctx, &zero, &mut |_| true).unwrap();
        assert!(g.tokens.is_empty() && cache.is_empty());
    }
}

/// Seeded sampling with every warper and a repetition penalty.
fn sampled_params() -> SamplingParams {
    SamplingParams {
        temperature: Some(0.9),
        top_k: Some(20),
        top_p: Some(0.9),
        repetition_penalty: 1.1,
        seed: 99,
    }
}

#[test]
fn sampled_generate_is_reproducible() {
    let (cfg, model) = tiny_model(14);
    let prompt = embeds(&cfg, 1, 3, 23);
    let opts = GenerateOptions {
        max_new_tokens: 10,
        stop_ids: vec![],
        sampling: sampled_params(),
    };
    let run = || {
        generate(
            &model,
            &mut model.new_cache(),
            &prompt,
            &[],
            &opts,
            &mut |_| true,
        )
        .unwrap()
        .tokens
    };
    let a = run();
    assert_eq!(a.len(), 10);
    assert_eq!(a, run());
    assert!(a.iter().all(|&t| (t as usize) < cfg.vocab_size));
}

/// A decoder whose row lengths (64 and 96) fit the 32-weight blocks of `q8_0`/`q4_0`.
fn storage_cfg() -> Qwen2Config {
    Qwen2Config {
        vocab_size: 48,
        hidden_size: 64,
        intermediate_size: 96,
        ..tiny_cfg()
    }
}

fn load_stored(
    cfg: &Qwen2Config,
    w: &HashMap<String, Tensor>,
    read: DType,
    weights: WeightFormat,
) -> Qwen2Decoder {
    let vb = VarBuilder::from_tensors(w.clone(), read, &Device::Cpu);
    Qwen2Decoder::load_with(
        cfg,
        vb.pp(PREFIX),
        &LoadOptions {
            weights,
            compute: Default::default(),
        },
    )
    .unwrap()
}

/// Every tensor rounded to `dtype` and widened back: what a model stored in `dtype` computes
/// with.
fn upcast(w: &HashMap<String, Tensor>, dtype: DType) -> HashMap<String, Tensor> {
    w.iter()
        .map(|(k, t)| {
            let t = t.to_dtype(dtype).unwrap().to_dtype(DType::F32).unwrap();
            (k.clone(), t)
        })
        .collect()
}

fn greedy_tokens(model: &Qwen2Decoder, prompt: &Tensor, steps: usize) -> Vec<u32> {
    let opts = GenerateOptions {
        max_new_tokens: steps,
        stop_ids: vec![],
        sampling: SamplingParams::default(),
    };
    generate(
        model,
        &mut model.new_cache(),
        prompt,
        &[],
        &opts,
        &mut |_| true,
    )
    .unwrap()
    .tokens
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// bf16/f16 storage computes in f32 on the stored weights: its logits equal the f32 model's on
/// the upcast weights up to summation order, for prefill (multi-row products) and decode steps
/// (the single-row kernels), and greedy decoding picks the same tokens.
#[test]
fn half_storage_equals_f32_model_on_upcast_weights() {
    let cfg = storage_cfg();
    let w = weights(&cfg, 31);
    let xs = embeds(&cfg, 1, 6, 41);
    for (format, dtype) in [
        (WeightFormat::Bf16, DType::BF16),
        (WeightFormat::F16, DType::F16),
    ] {
        let reference = load(&cfg, &upcast(&w, dtype), DType::F32);
        let model = load_stored(&cfg, &w, dtype, format);
        assert_eq!((model.dtype(), model.weight_format()), (DType::F32, format));
        assert_eq!(model.head_weight_format(), format);
        assert_eq!(
            2 * model.linear_weight_bytes(),
            reference.linear_weight_bytes()
        );

        let expect = reference
            .forward_embeds_all(&xs, &mut reference.new_cache())
            .unwrap();
        let tol = 1e-5 * max_abs(&expect).max(1.0);
        let all = model
            .forward_embeds_all(&xs, &mut model.new_cache())
            .unwrap();
        assert!(max_diff(&all, &expect) <= tol, "{format} prefill");
        // Decode steps, with the embeddings in the checkpoint's dtype (cast by the model).
        let mut cache = model.new_cache();
        model
            .forward_embeds(&xs.narrow(1, 0, 3).unwrap(), &mut cache)
            .unwrap();
        for pos in 3..6 {
            let step = xs.narrow(1, pos, 1).unwrap();
            let step = model.forward_embeds(&step, &mut cache).unwrap();
            let want = expect.narrow(1, pos, 1).unwrap().squeeze(1).unwrap();
            assert!(max_diff(&step, &want) <= tol, "{format} decode at {pos}");
        }
        let ids = Tensor::new(&[[3u32, 9, 27, 1]], &Device::Cpu).unwrap();
        let prompt = model.embed_tokens(&ids).unwrap();
        assert_eq!(prompt.dtype(), DType::F32);
        let prompt16 = prompt.to_dtype(dtype).unwrap();
        assert_eq!(
            greedy_tokens(&model, &prompt16, 8),
            greedy_tokens(&reference, &prompt16, 8),
            "{format}"
        );
    }
}

/// `q8_0` storage stays within 3% of the largest logit of the f32 model on the same (bf16
/// read) weights; the 4-bit formats give the head `q8_0`, and on rows of 64 and 96 (not
/// multiples of 256) `q4_k` falls back to `q4_0`, so the two load the same model.
#[test]
fn quantised_storage_is_close_to_f32() {
    let cfg = storage_cfg();
    let w = weights(&cfg, 32);
    let xs = embeds(&cfg, 1, 5, 42);
    let reference = load(&cfg, &upcast(&w, DType::BF16), DType::F32);
    let expect = reference
        .forward_embeds_all(&xs, &mut reference.new_cache())
        .unwrap();
    let q8 = load_stored(&cfg, &w, DType::BF16, WeightFormat::Q8_0);
    assert_eq!(q8.head_weight_format(), WeightFormat::Q8_0);
    let got = q8.forward_embeds_all(&xs, &mut q8.new_cache()).unwrap();
    let err = max_diff(&got, &expect) / max_abs(&expect);
    assert!(err <= 0.03, "q8_0 relative logit error {err}");
    assert!(err > 0.0, "q8_0 logits are exact: not quantised?");

    let q4_0 = load_stored(&cfg, &w, DType::BF16, WeightFormat::Q4_0);
    let q4_k = load_stored(&cfg, &w, DType::BF16, WeightFormat::Q4K);
    assert_eq!(q4_k.head_weight_format(), WeightFormat::Q8_0);
    assert_eq!(q4_k.linear_weight_bytes(), q4_0.linear_weight_bytes());
    let a = q4_0.forward_embeds_all(&xs, &mut q4_0.new_cache()).unwrap();
    let b = q4_k.forward_embeds_all(&xs, &mut q4_k.new_cache()).unwrap();
    assert_eq!(max_diff(&a, &b), 0.0);
    let err = max_diff(&a, &expect) / max_abs(&expect);
    assert!(err <= 0.3, "q4_0 relative logit error {err}");
}

/// Rows of 16 fit no block format: asking for `q8_0` keeps bf16, documented, not a panic.
#[test]
fn block_formats_on_rows_that_do_not_divide_keep_bf16() {
    let cfg = tiny_cfg();
    let w = weights(&cfg, 33);
    let xs = embeds(&cfg, 1, 3, 43);
    let bf16 = load_stored(&cfg, &w, DType::BF16, WeightFormat::Bf16);
    let q8 = load_stored(&cfg, &w, DType::BF16, WeightFormat::Q8_0);
    assert_eq!(q8.weight_format(), WeightFormat::Q8_0);
    assert_eq!(q8.head_weight_format(), WeightFormat::Bf16);
    assert_eq!(q8.linear_weight_bytes(), bf16.linear_weight_bytes());
    let a = q8.forward_embeds_all(&xs, &mut q8.new_cache()).unwrap();
    let b = bf16.forward_embeds_all(&xs, &mut bf16.new_cache()).unwrap();
    assert_eq!(max_diff(&a, &b), 0.0);
}

/// The block formats store the embedding table as `q8_0` (34 bytes per 32 weights), its
/// lookups stay within `q8_0` rounding of the bf16 rows, and a tied head shares the table's
/// blocks (no second copy) and computes exactly what an untied `q8_0` head with
/// `lm_head = embed_tokens` does; the float formats keep the checkpoint's table.
#[test]
fn quantised_modes_store_the_embedding_as_q8_0_and_tied_heads_share_it_as_half_ones_do() {
    let untied_cfg = storage_cfg();
    let tied_cfg = Qwen2Config {
        tie_word_embeddings: true,
        ..untied_cfg.clone()
    };
    let (v, h) = (untied_cfg.vocab_size, untied_cfg.hidden_size);
    let mut w = weights(&untied_cfg, 34);
    let embed_name = format!("{PREFIX}.model.embed_tokens.weight");
    let embed = w[&embed_name].to_dtype(DType::BF16).unwrap();
    let ids = Tensor::new(&[[5u32, 0, 47, 5]], &Device::Cpu).unwrap();
    let xs = embeds(&untied_cfg, 1, 4, 44);

    let bf16 = load_stored(&untied_cfg, &w, DType::BF16, WeightFormat::Bf16);
    assert_eq!(bf16.embedding_format(), None);
    assert_eq!(bf16.embedding_bytes(), v * h * 2);

    w.remove(&format!("{PREFIX}.lm_head.weight"));
    let reference = load(&tied_cfg, &upcast(&w, DType::BF16), DType::F32);
    let expect = reference
        .forward_embeds_all(&xs, &mut reference.new_cache())
        .unwrap();
    for format in [WeightFormat::Q8_0, WeightFormat::Q4_0, WeightFormat::Q4K] {
        let tied = load_stored(&tied_cfg, &w, DType::BF16, format);
        assert_eq!(
            tied.embedding_format(),
            Some(WeightFormat::Q8_0),
            "{format}"
        );
        assert_eq!(tied.embedding_bytes(), v * h / 32 * 34, "{format}");
        assert_eq!(tied.head_weight_format(), WeightFormat::Q8_0, "{format}");
        assert!(
            tied.head_shares_embedding(),
            "{format}: head copies the table"
        );

        let got = tied.embed_tokens(&ids).unwrap();
        assert_eq!((got.dims(), got.dtype()), (&[1, 4, h][..], DType::F32));
        let want = embed
            .to_dtype(DType::F32)
            .unwrap()
            .index_select(&ids.flatten_all().unwrap(), 0)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let err = max_diff(&got, &want);
        // q8_0 rounds to steps of amax / 127 per block of 32 (these rows lie in [-1, 1)).
        assert!(err > 0.0 && err <= 0.5 / 127.0 + 1e-3, "{format}: {err}");
    }

    // bf16 and f16: the head is packed for the decode kernels and the table looks its rows up
    // there (one copy of the values); the lookups and the logits are those of the plain table.
    for (dtype, format) in [
        (DType::BF16, WeightFormat::Bf16),
        (DType::F16, WeightFormat::F16),
    ] {
        let tied = load_stored(&tied_cfg, &w, dtype, format);
        assert!(
            tied.head_shares_embedding(),
            "{format}: head copies the table"
        );
        assert_eq!(tied.embedding_format(), None);
        assert_eq!(tied.embedding_bytes(), v * h * 2);
        let got = tied.embed_tokens(&ids).unwrap();
        let want = w[&embed_name]
            .to_dtype(dtype)
            .unwrap()
            .index_select(&ids.flatten_all().unwrap(), 0)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        assert_eq!(got.dtype(), DType::F32);
        assert_eq!(max_diff(&got, &want.to_dtype(DType::F32).unwrap()), 0.0);
        let reference = load(&tied_cfg, &upcast(&w, dtype), DType::F32);
        let expect = reference
            .forward_embeds_all(&xs, &mut reference.new_cache())
            .unwrap();
        let a = tied.forward_embeds_all(&xs, &mut tied.new_cache()).unwrap();
        let err = max_diff(&a, &expect) / max_abs(&expect);
        assert!(err <= 1e-5, "tied {format} relative logit error {err}");
        assert!(tied
            .embed_tokens(&Tensor::new(&[[48u32]], &Device::Cpu).unwrap())
            .is_err());
    }

    let tied = load_stored(&tied_cfg, &w, DType::BF16, WeightFormat::Q8_0);
    let a = tied.forward_embeds_all(&xs, &mut tied.new_cache()).unwrap();
    let err = max_diff(&a, &expect) / max_abs(&expect);
    assert!(err <= 0.03, "tied q8_0 relative logit error {err}");
    let mut same = w.clone();
    same.insert(format!("{PREFIX}.lm_head.weight"), w[&embed_name].clone());
    let untied = load_stored(&untied_cfg, &same, DType::BF16, WeightFormat::Q8_0);
    assert!(!untied.head_shares_embedding());
    let b = untied
        .forward_embeds_all(&xs, &mut untied.new_cache())
        .unwrap();
    assert_eq!(max_diff(&a, &b), 0.0);
}

mod compute;
mod rows;
mod steps;

/// The size plan counts what the load keeps: the table's bytes, and the layers' and head's
/// bytes a decode step reads, for tied and untied heads, rows that fit the blocks or not,
/// bf16 and f32 reads, and every storage; a tied head the plan counts as shared holds the
/// table's own blocks. A tied checkpoint's stored `lm_head.weight` (transformers' copy) is
/// not read, so it is not counted.
#[test]
fn the_size_plan_counts_what_the_load_keeps() {
    for base in [tiny_cfg(), storage_cfg()] {
        for tied in [false, true] {
            let cfg = Qwen2Config {
                tie_word_embeddings: tied,
                ..base.clone()
            };
            let w = weights(&cfg, 35);
            let shapes: Vec<(String, Vec<usize>)> = w
                .iter()
                .map(|(k, t)| (k[PREFIX.len() + 1..].to_string(), t.dims().to_vec()))
                .collect();
            for read in [DType::BF16, DType::F32] {
                let storages = std::iter::once(None).chain(WeightFormat::ALL.map(Some));
                for storage in storages {
                    let model = match storage {
                        None => load(&cfg, &w, read),
                        Some(f) => load_stored(&cfg, &w, read, f),
                    };
                    let plan = SizePlan::new(&cfg, read, storage);
                    assert_eq!(plan.compute_dtype(), model.dtype());
                    let bytes = plan.bytes(shapes.iter().map(|(n, s)| (n.as_str(), s.as_slice())));
                    let what = format!("tied {tied}, h {}, {read:?}, {storage:?}", cfg.hidden_size);
                    assert_eq!(bytes.embedding, model.embedding_bytes() as u64, "{what}");
                    // A shared head reads the table.
                    let head = match (tied, bytes.head) {
                        (true, 0) => bytes.embedding,
                        _ => bytes.head,
                    };
                    assert_eq!(
                        bytes.layers + head,
                        model.linear_weight_bytes() as u64,
                        "{what}"
                    );
                    if tied && model.embedding_format().is_some() {
                        assert_eq!(bytes.head == 0, model.head_shares_embedding(), "{what}");
                    }
                }
            }
        }
    }
    // candle converts a tensor to its own dtype, and makes a contiguous tensor contiguous,
    // without a copy: what lets a float head share a table of its dtype.
    let t = Tensor::zeros((3, 4), DType::BF16, &Device::Cpu).unwrap();
    let same = t.to_dtype(DType::BF16).unwrap().contiguous().unwrap();
    assert_eq!(t.id(), same.id());
}
