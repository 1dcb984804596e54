//! `auris bench`: stage timings of the pipeline on one clip, with warm-up and repetitions.
//!
//! Each repetition runs every keep ratio through the request core as `auris caption` runs it
//! ([`Pipeline::run`]): the file measured, then read, decoded, turned into log-mel, encoded
//! (with attention scores when pruning) and pruned one window at a time, projected, prefilled,
//! then `new_tokens` greedy tokens with stop ids disabled. The encoder's time without and
//! with scores comes from the keep ratios that do not prune and from those that do; when
//! only one kind is asked for, the other is measured by streaming the clip through the
//! encoder alone, so the cost of the scores is always visible. Times are wall-clock
//! milliseconds; the report gives the minimum and the median over the repetitions.
//!
//! On request ([`decode_batches`], `auris bench --decode-batch 1,2,4,8`) it also times the
//! decoder alone stepping `B` sequences together ([`auris_llm::step_many`]: each weight read
//! once per step for all of them) and reports the tokens per second summed over the
//! sequences, for each `B`.

use std::path::PathBuf;
use std::time::Instant;

use auris_audio::config::EncoderConfig;
use auris_llm::{step_many, GenerateOptions, Qwen2Config, Qwen2Decoder, SamplingParams, Sequence};
use auris_prune::{Policy, Strategy};
use candle_core::Tensor;
use rayon::prelude::*;
use serde::Serialize;

use crate::budget::ContextFit;
use crate::pipeline::{Pipeline, PromptSpec, Request, Task, Timings};
use crate::Error;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The clip.
    pub audio: PathBuf,
    /// Untimed runs before measuring.
    pub warmup: usize,
    /// Timed runs.
    pub repeat: usize,
    /// Tokens generated after the prefill.
    pub new_tokens: usize,
    /// Pruning strategy used for every keep ratio below 1.
    pub strategy: Strategy,
    /// Keep ratios to measure (1.0 means no pruning).
    pub keeps: Vec<f32>,
    /// The prompt.
    pub prompt: PromptSpec,
}

/// Minimum and median of repeated timings, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Stat {
    /// Fastest run.
    pub min_ms: f64,
    /// Median run.
    pub median_ms: f64,
}

impl Stat {
    fn of(mut samples: Vec<f64>) -> Self {
        samples.sort_by(f64::total_cmp);
        let n = samples.len();
        let median = if n == 0 {
            0.0
        } else if n % 2 == 1 {
            samples[n / 2]
        } else {
            (samples[n / 2 - 1] + samples[n / 2]) / 2.0
        };
        Self {
            min_ms: samples.first().copied().unwrap_or(0.0),
            median_ms: median,
        }
    }
}

/// Timings at one keep ratio.
#[derive(Debug, Clone, Serialize)]
pub struct KeepReport {
    /// The keep ratio.
    pub keep: f32,
    /// Strategy name (`none` at keep 1).
    pub strategy: String,
    /// Audio tokens the encoder produced.
    pub n_audio_tokens: usize,
    /// Audio tokens the LLM saw.
    pub n_kept: usize,
    /// Prompt length after expansion.
    pub prompt_tokens: usize,
    /// Selection and projection of the kept rows.
    pub select_project: Stat,
    /// Prompt prefill up to the first logits.
    pub prefill: Stat,
    /// Time to first token: decode + mel + encoder (+ scores) + selection + projection + prefill.
    pub ttft: Stat,
    /// `ttft` plus the generation of `new_tokens` tokens.
    pub e2e: Stat,
    /// Median decode speed over the repetitions, tokens per second.
    pub decode_tok_s: f64,
    /// Floating-point operations of the prefill ([`prefill_flop`]), in units of 10^9.
    pub prefill_gflop: f64,
    /// `prefill_gflop` over the fastest prefill, GFLOP/s.
    pub prefill_gflops: f64,
    /// `prefill_gflops` as a percentage of the machine's measured f32 FMA peak.
    pub prefill_peak_pct: f64,
}

/// The whole benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Model as given.
    pub model: String,
    /// The clip.
    pub audio: String,
    /// Its duration in seconds.
    pub duration_s: f64,
    /// Timed repetitions.
    pub repeat: usize,
    /// Tokens generated per run.
    pub new_tokens: usize,
    /// Decoding and resampling the file (measured, then read window by window).
    pub decode_audio: Stat,
    /// Log-mel features of every window.
    pub mel: Stat,
    /// Encoder without scores.
    pub encoder: Stat,
    /// Encoder with the last layer's attention scores.
    pub encoder_with_scores: Stat,
    /// Median extra cost of the scores over the plain encoder, in percent.
    pub scores_overhead_pct: f64,
    /// One entry per keep ratio.
    pub keeps: Vec<KeepReport>,
    /// Peak resident memory of the process in MiB (Linux only; 0 elsewhere).
    pub peak_rss_mb: f64,
    /// Loading the model (filled in by the caller, who timed it; 0 otherwise).
    pub load_ms: f64,
    /// Storage of the language model's linear weights (`f32`, `bf16`, `q8_0`, ...).
    pub weights: String,
    /// Storage of its output head (the 4-bit modes give it `q8_0`).
    pub head_weights: String,
    /// Precision of the matrix products' inputs (`f32`, `bf16`; see
    /// [`crate::pipeline::ComputeMode`]).
    pub compute: String,
    /// Why that precision: chosen, or what `auto` found.
    pub compute_reason: String,
    /// Bytes of weights one decode step reads (every linear layer and the head).
    pub weight_bytes_per_token: u64,
    /// The machine's read bandwidth with this run's threads, bytes per second (a parallel sum
    /// over a 1 GiB array, best of 3).
    pub read_bandwidth: f64,
    /// The decode ceiling that bandwidth sets: `read_bandwidth / weight_bytes_per_token`.
    pub decode_limit_tok_s: f64,
    /// The machine's f32 multiply-add peak with this run's threads, GFLOP/s (measured:
    /// [`auris_kernels::peak`]), and the instruction set it was measured with.
    pub fma_peak_gflops: f64,
    /// Vector instructions of the peak measurement (`avx512f`, `avx2+fma`, `portable`).
    pub fma_level: String,
    /// Floating-point operations of one encoding of the clip ([`encoder_flop`]), 10^9.
    pub encoder_gflop: f64,
    /// `encoder_gflop` over the fastest encoding (without scores), GFLOP/s.
    pub encoder_gflops: f64,
    /// `encoder_gflops` as a percentage of `fma_peak_gflops`.
    pub encoder_peak_pct: f64,
    /// Decode throughput of sequences stepped together ([`decode_batches`]), when asked for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub decode_batch: Vec<BatchDecode>,
}

/// Decode throughput of `batch` sequences stepped together.
#[derive(Debug, Clone, Serialize)]
pub struct BatchDecode {
    /// Sequences decoding together, one token each per step.
    pub batch: usize,
    /// Prompt tokens each sequence holds before the timed steps.
    pub prompt_tokens: usize,
    /// Timed steps.
    pub steps: usize,
    /// Median time of one step (a token of every sequence), in milliseconds.
    pub step_ms: f64,
    /// Tokens per second summed over the sequences, at the median step time.
    pub tok_s: f64,
}

/// Prompt tokens of each sequence of [`decode_batches`]: a short text prompt, so the steps
/// time the weights rather than the attention over a long context.
const BATCH_PROMPT_TOKENS: usize = 32;

/// Times `steps` greedy decode steps of `batch` sequences stepped together by
/// [`step_many`], for each `batch` in `sizes`, after a prefill of [`BATCH_PROMPT_TOKENS`]
/// tokens each (different ids per sequence) and one untimed step; `repeat` times each.
pub fn decode_batches(
    decoder: &Qwen2Decoder,
    sizes: &[usize],
    steps: usize,
    repeat: usize,
    log: &mut dyn FnMut(&str),
) -> Result<Vec<BatchDecode>, Error> {
    if sizes.contains(&0) || steps == 0 {
        return Err(Error::Usage(
            "decode batch sizes and the steps timed must be at least 1".to_string(),
        ));
    }
    let opts = GenerateOptions {
        max_new_tokens: steps + 2,
        stop_ids: Vec::new(),
        sampling: SamplingParams::default(),
    };
    let vocab = decoder.config().vocab_size.max(1);
    let mut out = Vec::with_capacity(sizes.len());
    for &batch in sizes {
        let mut times = Vec::with_capacity(steps * repeat.max(1));
        for _ in 0..repeat.max(1) {
            let mut seqs = (0..batch)
                .map(|i| {
                    let ids: Vec<u32> = (0..BATCH_PROMPT_TOKENS)
                        .map(|t| ((1 + 7 * t + 13 * i) % vocab) as u32)
                        .collect();
                    let ids_t = Tensor::new(ids.as_slice(), decoder.device())?.unsqueeze(0)?;
                    let embeds = decoder.embed_tokens(&ids_t)?;
                    Sequence::prefill(decoder, decoder.new_cache(), &embeds, &ids, &opts)
                })
                .collect::<Result<Vec<_>, auris_llm::LlmError>>()?;
            let mut refs: Vec<&mut Sequence> = seqs.iter_mut().collect();
            // The first step chooses from the prefill's logits; the second warms up.
            step_many(decoder, &mut refs)?;
            step_many(decoder, &mut refs)?;
            for _ in 0..steps {
                let start = Instant::now();
                step_many(decoder, &mut refs)?;
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        let step_ms = Stat::of(times).median_ms;
        let tok_s = batch as f64 * 1e3 / step_ms.max(1e-9);
        log(&format!(
            "decode batch {batch}: {step_ms:.1} ms per step, {tok_s:.1} tok/s summed"
        ));
        out.push(BatchDecode {
            batch,
            prompt_tokens: BATCH_PROMPT_TOKENS,
            steps,
            step_ms,
            tok_s,
        });
    }
    Ok(out)
}

/// Floating-point operations (a multiply-add counts 2) of encoding windows of `tokens[i]` audio
/// tokens each, in the valid-frames mode the CPU uses: `p = 2 n` positions per window (the
/// conv stem's output before pooling, within one position), the conv stem (kernel 3) over `2p`
/// and `p` frames, and per layer the four attention projections, the two feed-forward products
/// and the two attention products (`q k^T` and `p v`, `p x p` per head). Norms, GELU and
/// softmax are left out: they are a few percent and not multiply-adds.
pub fn encoder_flop(cfg: &EncoderConfig, tokens: &[usize]) -> f64 {
    let (d, ffn, mels) = (
        cfg.d_model as f64,
        cfg.encoder_ffn_dim as f64,
        cfg.num_mel_bins as f64,
    );
    tokens
        .iter()
        .map(|&n| {
            let p = 2.0 * n as f64;
            let stem = 2.0 * 3.0 * (2.0 * p * mels * d + p * d * d);
            let layer = 2.0 * p * (4.0 * d * d + 2.0 * d * ffn) + 2.0 * 2.0 * p * p * d;
            stem + cfg.encoder_layers as f64 * layer
        })
        .sum()
}

/// Floating-point operations of prefilling `tokens` positions from an empty cache: per layer
/// the q/k/v/o projections, the gated MLP's three products and the causal attention products
/// (`tokens (tokens + 1) / 2` query-key pairs per head, twice), then the output head for the
/// last position only.
pub fn prefill_flop(cfg: &Qwen2Config, tokens: usize) -> f64 {
    let (h, inter, s) = (
        cfg.hidden_size as f64,
        cfg.intermediate_size as f64,
        tokens as f64,
    );
    let qd = (cfg.num_attention_heads * cfg.head_dim()) as f64;
    let kvd = (cfg.num_kv_heads() * cfg.head_dim()) as f64;
    let projections = 2.0 * s * (h * (qd + 2.0 * kvd) + qd * h + 3.0 * h * inter);
    let attention = 2.0 * 2.0 * qd * s * (s + 1.0) / 2.0;
    cfg.num_hidden_layers as f64 * (projections + attention) + 2.0 * h * cfg.vocab_size as f64
}

/// GFLOP/s of `flop` done in `ms`, and that as a percentage of `peak` GFLOP/s.
fn achieved(flop: f64, ms: f64, peak: f64) -> (f64, f64) {
    let gflops = flop / 1e9 / (ms / 1e3).max(1e-12);
    (gflops, 100.0 * gflops / peak.max(1e-12))
}

/// Peak resident set size (`VmHWM`) in MiB, or 0 when unknown.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

#[derive(Default)]
struct KeepSamples {
    select_project: Vec<f64>,
    prefill: Vec<f64>,
    ttft: Vec<f64>,
    e2e: Vec<f64>,
    tok_s: Vec<f64>,
    n_audio_tokens: usize,
    n_kept: usize,
    prompt_tokens: usize,
}

impl KeepSamples {
    /// One timed run's stages, as the pipeline measured them.
    fn push(&mut self, t: &Timings) {
        let ttft = t.decode_audio + t.mel + t.encoder + t.projector + t.prefill;
        self.select_project.push(t.projector);
        self.prefill.push(t.prefill);
        self.ttft.push(ttft);
        self.e2e.push(ttft + t.generate);
        self.tok_s.push(t.tokens_per_s);
    }
}

/// The stage samples of every timed run.
#[derive(Default)]
struct Measured {
    decode: Vec<f64>,
    mel: Vec<f64>,
    encoder: Vec<f64>,
    encoder_scores: Vec<f64>,
    per_keep: Vec<KeepSamples>,
    duration_s: f64,
    window_tokens: Vec<usize>,
}

/// One request per keep ratio (1 means no pruning), greedy with no stop ids, so that every
/// run generates `new_tokens` tokens.
fn requests(opts: &BenchOptions) -> Result<Vec<Request>, Error> {
    let generate = GenerateOptions {
        max_new_tokens: opts.new_tokens,
        stop_ids: Vec::new(),
        sampling: SamplingParams {
            temperature: None,
            top_k: None,
            top_p: None,
            repetition_penalty: 1.0,
            seed: 0,
        },
    };
    opts.keeps
        .iter()
        .map(|&keep| {
            let strategy = if keep >= 1.0 {
                Strategy::None
            } else {
                opts.strategy
            };
            let policy = Policy { strategy, keep };
            policy.validate()?;
            Ok(Request {
                audio: opts.audio.clone(),
                prompt: opts.prompt.clone(),
                policy,
                generate: generate.clone(),
                task: Task::Generate,
                context: ContextFit::default(),
            })
        })
        .collect()
}

/// Runs the warm-ups and the timed runs: every request through [`Pipeline::run`], which times
/// its stages, and the encoder alone for a kind (with or without scores) no request times.
fn measure(
    pipeline: &Pipeline,
    opts: &BenchOptions,
    requests: &[Request],
    log: &mut dyn FnMut(&str),
) -> Result<Measured, Error> {
    let mut m = Measured {
        per_keep: requests.iter().map(|_| KeepSamples::default()).collect(),
        window_tokens: pipeline.file_window_tokens(&opts.audio)?,
        ..Measured::default()
    };
    let prunes = |r: &Request| !matches!(r.policy.strategy, Strategy::None);
    let probes: Vec<bool> = [false, true]
        .into_iter()
        .filter(|&scores| !requests.iter().any(|r| prunes(r) == scores))
        .collect();
    for run in 0..opts.warmup + opts.repeat {
        let timed = run >= opts.warmup;
        let (what, i, of) = if timed {
            ("run", run - opts.warmup + 1, opts.repeat)
        } else {
            ("warm-up", run + 1, opts.warmup)
        };
        log(&format!("bench: {what} {i}/{of}"));
        for (request, samples) in requests.iter().zip(m.per_keep.iter_mut()) {
            let response = pipeline.run(request, &mut |_| true)?;
            m.duration_s = response.duration_s;
            samples.n_audio_tokens = response.n_audio_tokens;
            samples.n_kept = response.n_kept;
            samples.prompt_tokens = response.prompt_token_ids.len();
            if timed {
                let t = &response.timings;
                m.decode.push(t.decode_audio);
                m.mel.push(t.mel);
                let encoder = if prunes(request) {
                    &mut m.encoder_scores
                } else {
                    &mut m.encoder
                };
                encoder.push(t.encoder);
                samples.push(t);
            }
        }
        for &scores in &probes {
            let mut t = Timings::default();
            let every = Policy {
                strategy: Strategy::None,
                keep: 1.0,
            };
            pipeline.encode_streamed(&opts.audio, &every, scores, &mut t)?;
            if timed {
                let encoder = if scores {
                    &mut m.encoder_scores
                } else {
                    &mut m.encoder
                };
                encoder.push(t.encoder);
            }
        }
    }
    Ok(m)
}

/// The report of each keep ratio from its samples; `peak` is the FMA peak in GFLOP/s.
fn keep_reports(
    text: &Qwen2Config,
    requests: &[Request],
    per_keep: Vec<KeepSamples>,
    peak: f64,
) -> Vec<KeepReport> {
    requests
        .iter()
        .map(|r| r.policy)
        .zip(per_keep)
        .map(|(policy, s)| {
            let flop = prefill_flop(text, s.prompt_tokens);
            let prefill = Stat::of(s.prefill);
            let (gflops, pct) = achieved(flop, prefill.min_ms, peak);
            KeepReport {
                keep: policy.keep,
                strategy: policy.strategy.name().to_string(),
                n_audio_tokens: s.n_audio_tokens,
                n_kept: s.n_kept,
                prompt_tokens: s.prompt_tokens,
                select_project: Stat::of(s.select_project),
                prefill,
                ttft: Stat::of(s.ttft),
                e2e: Stat::of(s.e2e),
                decode_tok_s: Stat::of(s.tok_s).median_ms,
                prefill_gflop: flop / 1e9,
                prefill_gflops: gflops,
                prefill_peak_pct: pct,
            }
        })
        .collect()
}

/// Runs the benchmark and reports progress on stderr through `log`.
pub fn run(
    pipeline: &Pipeline,
    opts: &BenchOptions,
    log: &mut dyn FnMut(&str),
) -> Result<BenchReport, Error> {
    if opts.repeat == 0 {
        return Err(Error::Usage(
            "a benchmark needs at least one timed repetition".to_string(),
        ));
    }
    let requests = requests(opts)?;
    let Measured {
        decode,
        mel,
        encoder: enc,
        encoder_scores: enc_scores,
        per_keep,
        duration_s,
        window_tokens,
    } = measure(pipeline, opts, &requests, log)?;

    let encoder = Stat::of(enc);
    let encoder_with_scores = Stat::of(enc_scores);
    let decoder = pipeline.decoder();
    let weight_bytes = decoder.linear_weight_bytes();
    // Read before the probes, whose 1 GiB array is not the engine's memory.
    let peak_rss = peak_rss_mb();
    log("measuring the read bandwidth (1 GiB) and the FMA peak");
    let bandwidth = read_bandwidth(1 << 30, 3);
    let (peak_flops, fma_level) = auris_kernels::peak::fma_peak_flops(20_000_000, 3);
    let peak = peak_flops / 1e9;
    let cfg = pipeline.config();
    let keeps = keep_reports(&cfg.text_config, &requests, per_keep, peak);
    let encoder_flops = encoder_flop(&cfg.audio_config, &window_tokens);
    let (encoder_gflops, encoder_peak_pct) = achieved(encoder_flops, encoder.min_ms, peak);
    Ok(BenchReport {
        model: pipeline.name().to_string(),
        audio: opts.audio.display().to_string(),
        duration_s,
        repeat: opts.repeat,
        new_tokens: opts.new_tokens,
        decode_audio: Stat::of(decode),
        mel: Stat::of(mel),
        scores_overhead_pct: 100.0 * (encoder_with_scores.median_ms - encoder.median_ms)
            / encoder.median_ms.max(1e-9),
        encoder,
        encoder_with_scores,
        keeps,
        peak_rss_mb: peak_rss,
        load_ms: 0.0,
        weights: decoder.weight_format().to_string(),
        head_weights: decoder.head_weight_format().to_string(),
        compute: pipeline.compute().name.to_string(),
        compute_reason: pipeline.compute().reason.clone(),
        weight_bytes_per_token: weight_bytes as u64,
        read_bandwidth: bandwidth,
        decode_limit_tok_s: bandwidth / weight_bytes.max(1) as f64,
        fma_peak_gflops: peak,
        fma_level: fma_level.to_string(),
        encoder_gflop: encoder_flops / 1e9,
        encoder_gflops,
        encoder_peak_pct,
        decode_batch: Vec::new(),
    })
}

/// Measures the read bandwidth of the current rayon pool, in bytes per second: the best of
/// `repeats` parallel sums over an array of `bytes`, large enough to leave every cache. A
/// decode step reads every weight once, so this bounds its tokens per second.
pub fn read_bandwidth(bytes: usize, repeats: usize) -> f64 {
    let data: Vec<f32> = (0..bytes / 4).map(|i| (i % 251) as f32).collect();
    let chunk = (data.len() / (4 * rayon::current_num_threads())).max(1 << 14);
    let mut best = f64::INFINITY;
    let mut sink = 0.0f32;
    for _ in 0..repeats.max(1) {
        let start = Instant::now();
        let total: f32 = data.par_chunks(chunk).map(sum_lanes).sum();
        best = best.min(start.elapsed().as_secs_f64());
        sink += total;
    }
    std::hint::black_box(sink);
    (data.len() * 4) as f64 / best
}

/// Sixteen independent partial sums, so the compiler vectorises the loop and the memory
/// system, not the adder chain, sets the pace.
fn sum_lanes(xs: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let chunks = xs.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// A markdown table of the report.
pub fn markdown(r: &BenchReport) -> String {
    let mut out = format!(
        "{} on {} ({:.1} s), median of {} runs (min in brackets), {} new tokens\n\n",
        r.model, r.audio, r.duration_s, r.repeat, r.new_tokens
    );
    out.push_str(&format!(
        "| stage | time |\n|---|---|\n| decode + resample | {:.1} ms ({:.1}) |\n| log-mel | {:.1} ms ({:.1}) |\n| encoder | {:.1} ms ({:.1}) |\n| encoder + scores | {:.1} ms ({:.1}), scores +{:.1}% |\n\n",
        r.decode_audio.median_ms,
        r.decode_audio.min_ms,
        r.mel.median_ms,
        r.mel.min_ms,
        r.encoder.median_ms,
        r.encoder.min_ms,
        r.encoder_with_scores.median_ms,
        r.encoder_with_scores.min_ms,
        r.scores_overhead_pct
    ));
    out.push_str("| strategy | keep | audio tokens | prompt tokens | select+project | prefill | time to first token | end to end | decode tok/s |\n|---|---|---|---|---|---|---|---|---|\n");
    for k in &r.keeps {
        out.push_str(&format!(
            "| {} | {} | {}/{} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.2} |\n",
            k.strategy,
            k.keep,
            k.n_kept,
            k.n_audio_tokens,
            k.prompt_tokens,
            k.select_project.median_ms,
            k.prefill.median_ms,
            k.ttft.median_ms,
            k.e2e.median_ms,
            k.decode_tok_s
        ));
    }
    out.push_str(&format!(
        "\nload {:.1} s; weights {} (head {}), compute {} ({}), {:.2} GB read per decoded token; \
         read bandwidth {:.1} GB/s, so decode can reach {:.2} tok/s at most\n",
        r.load_ms / 1e3,
        r.weights,
        r.head_weights,
        r.compute,
        r.compute_reason,
        r.weight_bytes_per_token as f64 / 1e9,
        r.read_bandwidth / 1e9,
        r.decode_limit_tok_s
    ));
    out.push_str(&format!(
        "\nmachine limit: f32 FMA peak {:.0} GFLOP/s ({}, measured); encoder {:.1} GFLOP at \
         {:.0} GFLOP/s ({:.0} % of peak)",
        r.fma_peak_gflops, r.fma_level, r.encoder_gflop, r.encoder_gflops, r.encoder_peak_pct
    ));
    for k in &r.keeps {
        out.push_str(&format!(
            "; prefill {} tokens {:.1} GFLOP at {:.0} GFLOP/s ({:.0} %)",
            k.prompt_tokens, k.prefill_gflop, k.prefill_gflops, k.prefill_peak_pct
        ));
    }
    out.push_str(&format!("\n\npeak RSS {:.0} MiB\n", r.peak_rss_mb));
    if let Some(first) = r.decode_batch.first() {
        out.push_str(&format!(
            "\ndecode of sequences stepped together ({} prompt tokens each, median of {} steps)\n\n\
             | sequences | step | tok/s (sum) | vs {} |\n|---|---|---|---|\n",
            first.prompt_tokens, first.steps, first.batch
        ));
        for b in &r.decode_batch {
            out.push_str(&format!(
                "| {} | {:.1} ms | {:.1} | {:.2} |\n",
                b.batch,
                b.step_ms,
                b.tok_s,
                b.tok_s / first.tok_s.max(1e-9)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counts written out by hand for small shapes.
    #[test]
    fn flop_counts_match_hand_computed_values() {
        let enc: EncoderConfig = serde_json::from_value(serde_json::json!({
            "num_mel_bins": 2, "encoder_layers": 1, "encoder_attention_heads": 1,
            "encoder_ffn_dim": 4, "d_model": 2, "max_source_positions": 10
        }))
        .unwrap();
        // n = 1 token: p = 2 positions. Stem: 2*3*(2*2*2*2 + 2*2*2) = 6*24 = 144.
        // Layer: 2*2*(4*4 + 2*2*4) + 4*2*2*2 = 4*32 + 32 = 160.
        assert_eq!(encoder_flop(&enc, &[1]), 304.0);
        assert_eq!(encoder_flop(&enc, &[1, 1]), 608.0);

        let llm: Qwen2Config = serde_json::from_value(serde_json::json!({
            "vocab_size": 10, "hidden_size": 4, "intermediate_size": 8,
            "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1
        }))
        .unwrap();
        // head_dim 2: q 4, kv 2. s = 3: projections 2*3*(4*(4+4) + 4*4 + 3*4*8) = 6*144 = 864;
        // attention 4*4*3*4/2 = 96; head 2*4*10 = 80.
        assert_eq!(prefill_flop(&llm, 3), 864.0 + 96.0 + 80.0);
    }
}
