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
