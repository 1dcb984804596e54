//! Times the decoder alone on a checkpoint: one prefill, then greedy decode steps.
//!
//! ```text
//! cargo run --release -p auris-llm --example decode_bench -- MODEL_DIR [PREFILL] [NEW] [REPEAT] [--weights FORMAT]
//! ```
//!
//! `MODEL_DIR` holds a Qwen2-Audio checkpoint (`config.json` with `text_config`, safetensors
//! shards); the language model is read under `language_model`. The prompt is `PREFILL`
//! (default 800) deterministic token ids; `NEW` (default 32) tokens are decoded greedily, and
//! the whole run is repeated `REPEAT` (default 2) times. Threads follow `RAYON_NUM_THREADS`.
//! The generated ids are printed so runs of two builds can be compared for identical results.
//!
//! Without `--weights` the model is loaded with `Qwen2Decoder::load` in f32. With `--weights
//! f32|bf16|f16|q8_0|q4_0|q4_k` it goes through `Qwen2Decoder::load_with` (f32 compute),
//! reading the checkpoint as bf16 for the bf16 and quantised formats (what a hub checkpoint
//! holds), as f16 for f16 and as f32 for f32. The report gives the load time, the prefill
//! time, decode tokens/s, the bytes of linear weights read per token and the read bandwidth
//! that implies.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use auris_llm::{LoadOptions, Qwen2Config, Qwen2Decoder, WeightFormat};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;

fn shards(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    anyhow::ensure!(!files.is_empty(), "no safetensors in {}", dir.display());
    Ok(files)
}

fn argmax(logits: &Tensor) -> Result<u32> {
    Ok(logits.argmax(D::Minus1)?.flatten_all()?.to_vec1::<u32>()?[0])
}

/// Splits `--weights FORMAT` off the positional arguments.
fn weights_flag(mut args: Vec<String>) -> Result<(Vec<String>, Option<WeightFormat>)> {
    let Some(i) = args.iter().position(|a| a == "--weights") else {
        return Ok((args, None));
    };
    let value = args.get(i + 1).context("--weights needs a value")?.clone();
    args.drain(i..i + 2);
    Ok((args, Some(value.parse()?)))
}

fn load(
    cfg: &Qwen2Config,
    files: &[PathBuf],
    weights: Option<WeightFormat>,
) -> Result<Qwen2Decoder> {
    let read = match weights {
        None | Some(WeightFormat::F32) => DType::F32,
        Some(WeightFormat::F16) => DType::F16,
        Some(_) => DType::BF16,
    };
    // SAFETY: the checkpoint files are not modified while mapped.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(files, read, &Device::Cpu)? };
    let vb = vb.pp("language_model");
    Ok(match weights {
        None => Qwen2Decoder::load(cfg, vb)?,
        Some(weights) => Qwen2Decoder::load_with(
            cfg,
            vb,
            &LoadOptions {
                weights,
                compute: Default::default(),
            },
        )?,
    })
}

fn main() -> Result<()> {
    let (args, weights) = weights_flag(std::env::args().skip(1).collect())?;
    let dir = PathBuf::from(
        args.first()
            .context("usage: decode_bench MODEL_DIR [PREFILL] [NEW] [REPEAT]")?,
    );
    let number = |i: usize, default: usize| -> Result<usize> {
        Ok(match args.get(i) {
            Some(s) => s.parse().with_context(|| format!("argument {i}: {s}"))?,
            None => default,
        })
    };
    let (prefill, new, repeat) = (number(1, 800)?, number(2, 32)?, number(3, 2)?);

    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json"))?)?;
    let text = config
        .get("text_config")
        .context("config.json has no text_config")?;
    let cfg: Qwen2Config = serde_json::from_value(text.clone())?;
    let files = shards(&dir)?;
    let t = Instant::now();
    let model = load(&cfg, &files, weights)?;
    let bytes = model.linear_weight_bytes();
    println!(
        "weights {} (head {}), compute {:?}, load {:.2} s, {:.1} MB of linear weights per token",
        model.weight_format(),
        model.head_weight_format(),
        model.dtype(),
        t.elapsed().as_secs_f64(),
        bytes as f64 / 1e6
    );

    let ids: Vec<u32> = (0..prefill)
        .map(|i| ((i * 7919 + 13) % cfg.vocab_size) as u32)
        .collect();
    let ids = Tensor::from_vec(ids, (1, prefill), &Device::Cpu)?;
    let embeds = model.embed_tokens(&ids)?;
    for run in 0..repeat {
        let mut cache = model.new_cache();
        let t = Instant::now();
        let logits = model.forward_embeds(&embeds, &mut cache)?;
        let prefill_s = t.elapsed().as_secs_f64();
        let mut next = argmax(&logits)?;
        let mut tokens = vec![next];
        let t = Instant::now();
        for _ in 0..new {
            let ids = Tensor::new(&[[next]], &Device::Cpu)?;
            let logits = model.forward_embeds(&model.embed_tokens(&ids)?, &mut cache)?;
            next = argmax(&logits)?;
            tokens.push(next);
        }
        let decode_s = t.elapsed().as_secs_f64();
        let tok_s = new as f64 / decode_s;
        println!(
            "run {run}: prefill {prefill} tokens {prefill_s:.3} s, decode {new} tokens {tok_s:.2} tok/s ({:.1} ms/token, {:.1} GB/s of weights)",
            1e3 * decode_s / new as f64,
            tok_s * bytes as f64 / 1e9
        );
        println!("tokens {tokens:?}");
    }
    Ok(())
}
