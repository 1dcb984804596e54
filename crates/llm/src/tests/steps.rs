//! Generation as steps: a [`Sequence`] stepped by hand, interleaved with others or advanced
//! together with [`step_many`], gives exactly what [`generate`] gives.

use super::*;

/// Greedy with a repetition penalty, and seeded sampling with every warper.
fn options() -> Vec<GenerateOptions> {
    vec![
        GenerateOptions {
            max_new_tokens: 9,
            stop_ids: vec![],
            sampling: SamplingParams {
                repetition_penalty: 1.3,
                ..Default::default()
            },
        },
        GenerateOptions {
            max_new_tokens: 12,
            stop_ids: vec![],
            sampling: sampled_params(),
        },
    ]
}

fn prompt(model: &Qwen2Decoder, ids: &[u32]) -> Tensor {
    model
        .embed_tokens(
            &Tensor::new(ids, &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap(),
        )
        .unwrap()
}

/// `generate` from an empty cache: the generation and the cache's final length.
fn solo(model: &Qwen2Decoder, ids: &[u32], opts: &GenerateOptions) -> (Generation, usize) {
    let mut cache = model.new_cache();
    let g = generate(
        model,
        &mut cache,
        &prompt(model, ids),
        ids,
        opts,
        &mut |_| true,
    )
    .unwrap();
    (g, cache.len())
}

fn start(model: &Qwen2Decoder, ids: &[u32], opts: &GenerateOptions) -> Sequence {
    Sequence::prefill(model, model.new_cache(), &prompt(model, ids), ids, opts).unwrap()
}

/// A tiny f32 model and the same weights stored as `q8_0` (single-row decode through the
/// quantised GEMV).
fn models() -> Vec<Qwen2Decoder> {
    let cfg = storage_cfg();
    let w = weights(&cfg, 51);
    vec![
        load(&cfg, &w, DType::F32),
        load_stored(&cfg, &w, DType::F32, WeightFormat::Q8_0),
    ]
}

#[test]
fn stepping_by_hand_equals_generate() {
    let ids = [3u32, 7, 7, 1, 12];
    for model in models() {
        for opts in options() {
            let (expect, cache_len) = solo(&model, &ids, &opts);
            assert_eq!(expect.tokens.len(), opts.max_new_tokens);
            let mut seq = start(&model, &ids, &opts);
            assert_eq!((seq.position(), seq.input()), (ids.len(), None));
            let mut tokens = Vec::new();
            while let Some(t) = seq.step(&model).unwrap() {
                tokens.push(t);
                // The chosen token is fed by the next step, not before.
                let fed = ids.len() + tokens.len() - 1;
                assert_eq!(seq.position(), fed);
                if seq.finished().is_none() {
                    assert_eq!(seq.input(), Some(t));
                }
            }
            assert_eq!(tokens, expect.tokens, "{opts:?}");
            assert_eq!(seq.finished(), Some(Finish::Length));
            assert_eq!(seq.input(), None);
            assert_eq!(seq.step(&model).unwrap(), None);
            let (cache, g) = seq.into_parts();
            assert_eq!(g, expect);
            assert_eq!(cache.len(), cache_len);
        }
    }
}

#[test]
fn stop_ids_cancel_and_zero_tokens_finish_as_generate_does() {
    let (cfg, model) = tiny_model(13);
    let ids = [3u32, 7, 7, 1];
    let opts = &options()[0];
    let (plain, _) = solo(&model, &ids, opts);
    let stop = plain.tokens[3];
    let with_stop = GenerateOptions {
        stop_ids: vec![stop],
        ..opts.clone()
    };
    let (expect, _) = solo(&model, &ids, &with_stop);
    let mut seq = start(&model, &ids, &with_stop);
    while seq.step(&model).unwrap().is_some() {}
    assert_eq!(seq.finished(), Some(Finish::StopId(stop)));
    assert_eq!(seq.generation(), &expect);
    assert_eq!(expect.stopped_on, Some(stop));

    let mut seq = start(&model, &ids, opts);
    assert_eq!(seq.step(&model).unwrap(), Some(plain.tokens[0]));
    seq.cancel();
    assert_eq!(seq.step(&model).unwrap(), None);
    assert_eq!(seq.finished(), Some(Finish::Cancelled));
    assert_eq!(seq.generation().tokens, plain.tokens[..1]);

    let zero = GenerateOptions {
        max_new_tokens: 0,
        ..opts.clone()
    };
    let mut seq = start(&model, &ids, &zero);
    assert_eq!(seq.finished(), Some(Finish::Length));
    assert_eq!(seq.step(&model).unwrap(), None);
    assert!(seq.cache().is_empty());
    let bad = GenerateOptions {
        sampling: SamplingParams {
            top_p: Some(0.0),
            ..Default::default()
        },
        ..opts.clone()
    };
    let err = Sequence::prefill(&model, model.new_cache(), &prompt(&model, &ids), &ids, &bad)
        .unwrap_err();
    assert!(err.to_string().contains("top_p"), "{err}");
    let batch2 = embeds(&cfg, 2, 3, 5);
    assert!(matches!(
        Sequence::prefill(&model, model.new_cache(), &batch2, &[], opts),
        Err(LlmError::BadInput { .. })
    ));
}

/// Two prompts of different lengths with different options, so the sequences sit at
/// different positions and end at different steps.
fn two(model: &Qwen2Decoder) -> [(Vec<u32>, GenerateOptions, Generation); 2] {
    let [greedy, sampled] = <[GenerateOptions; 2]>::try_from(options()).unwrap();
    let a = vec![3u32, 7, 7, 1, 12];
    let b = vec![40u32, 2, 9];
    let ga = solo(model, &a, &greedy).0;
    let gb = solo(model, &b, &sampled).0;
    [(a, greedy, ga), (b, sampled, gb)]
}

#[test]
fn interleaved_sequences_each_equal_their_solo_runs() {
    for model in models() {
        let [(a, oa, ga), (b, ob, gb)] = two(&model);
        let mut sa = start(&model, &a, &oa);
        let mut sb = start(&model, &b, &ob);
        let (mut ta, mut tb) = (Vec::new(), Vec::new());
        while sa.finished().is_none() || sb.finished().is_none() {
            ta.extend(sa.step(&model).unwrap());
            tb.extend(sb.step(&model).unwrap());
        }
        assert_eq!((ta, tb), (ga.tokens.clone(), gb.tokens.clone()));
        assert_eq!((sa.generation(), sb.generation()), (&ga, &gb));
    }
}

#[test]
fn sequences_stepped_together_each_equal_their_solo_runs() {
    for model in models() {
        let [(a, oa, ga), (b, ob, gb)] = two(&model);
        let mut sa = start(&model, &a, &oa);
        let mut sb = start(&model, &b, &ob);
        // `b` joins two steps late, at its own position.
        sa.step(&model).unwrap();
        sa.step(&model).unwrap();
        loop {
            let out = step_many(&model, &mut [&mut sa, &mut sb]).unwrap();
            if out.iter().all(Option::is_none) {
                break;
            }
        }
        assert_eq!(sa.generation(), &ga);
        assert_eq!(sb.generation(), &gb);
        assert_eq!(
            step_many(&model, &mut []).unwrap(),
            Vec::<Option<u32>>::new()
        );
    }
}

#[test]
fn forward_batch_equals_each_input_alone_bit_for_bit() {
    for model in models() {
        let cfg = model.config().clone();
        let prompts = [embeds(&cfg, 1, 5, 61), embeds(&cfg, 1, 2, 62)];
        let steps = [embeds(&cfg, 1, 1, 63), embeds(&cfg, 1, 3, 64)];
        let mut expect = Vec::new();
        let mut caches = Vec::new();
        for (p, s) in prompts.iter().zip(&steps) {
            let mut cache = model.new_cache();
            model.forward_embeds(p, &mut cache).unwrap();
            caches.push(cache.clone());
            expect.push(model.forward_embeds(s, &mut cache).unwrap());
        }
        let [c0, c1] = &mut caches[..] else {
            unreachable!()
        };
        let got = model
            .forward_batch(&mut [
                SequenceInput {
                    embeds: &steps[0],
                    cache: c0,
                },
                SequenceInput {
                    embeds: &steps[1],
                    cache: c1,
                },
            ])
            .unwrap();
        for (g, e) in got.iter().zip(&expect) {
            assert_eq!(g.to_vec2::<f32>().unwrap(), e.to_vec2::<f32>().unwrap());
        }
        assert_eq!((caches[0].len(), caches[1].len()), (6, 5));
    }
}

#[test]
fn stop_strings_end_a_sequence() {
    let (_, model) = tiny_model(13);
    let ids = [3u32, 7, 7, 1];
    let opts = &options()[0];
    let (plain, _) = solo(&model, &ids, opts);
    // Each token's text is its id in angle brackets; stop at the third token's text.
    let stop = format!("<{}>", plain.tokens[2]);
    let first = plain
        .tokens
        .iter()
        .position(|t| format!("<{t}>") == stop)
        .unwrap();
    let mut seq = start(&model, &ids, opts).with_stop_strings(StopStrings::new([stop]));
    let mut sent = String::new();
    while let Some(t) = seq.step(&model).unwrap() {
        sent += &seq.push_text(&format!("<{t}>"));
    }
    sent += &seq.finish_text();
    assert_eq!(seq.finished(), Some(Finish::StopString));
    assert_eq!(seq.generation().tokens.len(), first + 1);
    let expect: String = plain.tokens[..first]
        .iter()
        .map(|t| format!("<{t}>"))
        .collect();
    assert_eq!(sent, expect);
    assert_eq!(seq.stop_strings().text(), expect);
}

/// Large enough that every product of a decode step takes the parallel path (at least 2^16
/// weights) and that `q4_K` fits its 256-weight super-blocks.
fn batch_cfg() -> Qwen2Config {
    Qwen2Config {
        vocab_size: 300,
        hidden_size: 256,
        intermediate_size: 512,
        ..tiny_cfg()
    }
}

/// The model of [`batch_cfg`] stored as `format`, which it must really get (no fallback).
fn batch_model(format: WeightFormat) -> Qwen2Decoder {
    let cfg = batch_cfg();
    let model = load_stored(&cfg, &weights(&cfg, 77), DType::F32, format);
    assert_eq!(model.weight_format(), format);
    model
}

/// One sequence of a schedule: its prompt, the step it arrives at, the logits it takes.
struct Plan {
    ids: Vec<u32>,
    arrives: usize,
    logits: usize,
}

/// `n` sequences with prompts of 1 to 7 tokens, arriving at staggered steps and leaving after
/// 2 to 7 logits, so the batch grows, shrinks and mixes prefills with decode rows.
fn plans(n: usize) -> Vec<Plan> {
    (0..n)
        .map(|i| Plan {
            ids: (0..1 + (i * 3) % 7)
                .map(|t| ((t * 31 + i * 17) % 300) as u32)
                .collect(),
            arrives: i % 3 + i / 2,
            logits: 2 + (i * 5) % 6,
        })
        .collect()
}

fn argmax(v: &[f32]) -> u32 {
    let best = v
        .iter()
        .enumerate()
        .fold(0, |b, (i, &x)| if x > v[b] { i } else { b });
    best as u32
}

fn row(logits: &Tensor) -> Vec<f32> {
    logits.to_vec2::<f32>().unwrap().remove(0)
}

/// A sequence alone through `forward_embeds`, greedy: its prompt's logits, then those of each
/// token it feeds.
fn logits_alone(model: &Qwen2Decoder, plan: &Plan) -> Vec<Vec<f32>> {
    let mut cache = model.new_cache();
    let mut out = vec![row(&model
        .forward_embeds(&prompt(model, &plan.ids), &mut cache)
        .unwrap())];
    while out.len() < plan.logits {
        let token = argmax(out.last().unwrap());
        let next = model.forward_embeds(&prompt(model, &[token]), &mut cache);
        out.push(row(&next.unwrap()));
    }
    out
}

/// The sequences of `plans` served together: each step is one `forward_batch` over the
/// prompts arriving then and one greedy decode position of every running sequence.
fn logits_together(model: &Qwen2Decoder, plans: &[Plan]) -> Vec<Vec<Vec<f32>>> {
    let mut caches: Vec<KvCache> = plans.iter().map(|_| model.new_cache()).collect();
    let mut seen: Vec<Vec<Vec<f32>>> = plans.iter().map(|_| Vec::new()).collect();
    for step in 0.. {
        let embeds: Vec<Option<Tensor>> = plans
            .iter()
            .zip(&seen)
            .map(|(p, seen)| match seen.last() {
                None if step == p.arrives => Some(prompt(model, &p.ids)),
                Some(last) if seen.len() < p.logits => Some(prompt(model, &[argmax(last)])),
                _ => None,
            })
            .collect();
        if embeds.iter().all(Option::is_none) && plans.iter().all(|p| p.arrives < step) {
            break;
        }
        let (mut inputs, mut who) = (Vec::new(), Vec::new());
        for (i, (cache, e)) in caches.iter_mut().zip(&embeds).enumerate() {
            if let Some(embeds) = e {
                inputs.push(SequenceInput { embeds, cache });
                who.push(i);
            }
        }
        for (i, logits) in who
            .into_iter()
            .zip(model.forward_batch(&mut inputs).unwrap())
        {
            seen[i].push(row(&logits));
        }
    }
    seen
}

fn bits(rows: &[Vec<f32>]) -> Vec<Vec<u32>> {
    rows.iter()
        .map(|r| r.iter().map(|v| v.to_bits()).collect())
        .collect()
}

/// Batches of 1 to 8 sequences (staggered arrivals, prompts of different lengths, sequences
/// finishing mid-batch, prefills beside decode rows) give every sequence bit for bit the
/// logits, and so the greedy ids, it gets alone, on every weight storage and 1 to 3 threads.
#[test]
fn stacked_decode_rows_give_each_sequence_its_logits_alone_bit_for_bit() {
    for format in WeightFormat::ALL {
        let model = batch_model(format);
        let plans = plans(8);
        let alone: Vec<_> = plans.iter().map(|p| logits_alone(&model, p)).collect();
        for threads in 1..=3 {
            for n in [1, 2, 5, 8] {
                let got = on_threads(threads, || logits_together(&model, &plans[..n]));
                for (i, (g, a)) in got.iter().zip(&alone).enumerate() {
                    assert_eq!(g.len(), plans[i].logits);
                    assert!(
                        bits(g) == bits(a),
                        "{format} threads={threads} n={n}: sequence {i} differs"
                    );
                }
            }
        }
    }
}

/// `step_many` over eight sequences joining at different steps, with different options and
/// token limits (so they finish mid-batch), gives each its `generate` output alone, on every
/// weight storage and 1 to 3 threads.
#[test]
fn step_many_over_eight_sequences_equals_each_alone() {
    let opts: Vec<GenerateOptions> = (0..8)
        .map(|i| GenerateOptions {
            max_new_tokens: 3 + i % 4,
            ..options()[i % 2].clone()
        })
        .collect();
    let prompts: Vec<Vec<u32>> = plans(8).into_iter().map(|p| p.ids).collect();
    for format in WeightFormat::ALL {
        let model = batch_model(format);
        let expect: Vec<Generation> = prompts
            .iter()
            .zip(&opts)
            .map(|(ids, o)| solo(&model, ids, o).0)
            .collect();
        for threads in 1..=3 {
            let got = on_threads(threads, || {
                let mut seqs: Vec<Sequence> = Vec::new();
                for (ids, o) in prompts.iter().zip(&opts) {
                    // One more sequence joins at each step.
                    seqs.push(start(&model, ids, o));
                    let mut all: Vec<&mut Sequence> = seqs.iter_mut().collect();
                    step_many(&model, &mut all).unwrap();
                }
                let mut all: Vec<&mut Sequence> = seqs.iter_mut().collect();
                while step_many(&model, &mut all)
                    .unwrap()
                    .iter()
                    .any(Option::is_some)
                {}
                seqs.iter()
                    .map(|s| s.generation().clone())
                    .collect::<Vec<_>>()
            });
            assert_eq!(got, expect, "{format} threads={threads}");
        }
    }
}

/// Under bf16 compute (every product's input rounded to bf16) a stack of decode rows rounds
/// each row as it would alone: every sequence still gets its logits alone, bit for bit.
#[test]
fn stacked_decode_rows_under_bf16_compute_equal_each_alone() {
    let cfg = batch_cfg();
    let vb = VarBuilder::from_tensors(weights(&cfg, 77), DType::F32, &Device::Cpu);
    let opts = LoadOptions {
        weights: WeightFormat::Bf16,
        compute: auris_kernels::round::Compute::Bf16,
    };
    let model = Qwen2Decoder::load_with(&cfg, vb.pp(PREFIX), &opts).unwrap();
    let plans = plans(6);
    let alone: Vec<_> = plans.iter().map(|p| logits_alone(&model, p)).collect();
    for threads in [1, 3] {
        let got = on_threads(threads, || logits_together(&model, &plans));
        for (i, (g, a)) in got.iter().zip(&alone).enumerate() {
            assert!(
                bits(g) == bits(a),
                "threads={threads}: sequence {i} differs"
            );
        }
    }
}
