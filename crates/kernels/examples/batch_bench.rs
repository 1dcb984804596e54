//! Times the batched decode products over the weights of a whole Qwen2-0.5B-shaped decoder
//! (24 layers of qkv, o, gate+up and down, and the 151,936-row head: 0.99 GB in bf16), so every
//! step reads its weights from memory as a real decode step does.
//!
//! ```text
//! cargo run --release -p auris-kernels --example batch_bench -- [TYPE] [BATCHES] [STEPS]
//! ```
//!
//! TYPE is `bf16` (default), `packed` or `packed-f16` (bf16 or f16 packed in panels,
//! [`auris_kernels::packed`]), `f16`, `f32` or `q8_0`; BATCHES a comma-separated list of batch sizes
//! (default `1,2,4,8`); STEPS the steps timed per size (default 12, median printed). Threads
//! follow `RAYON_NUM_THREADS`. `HOT=1` times one layer's products only (weights that stay in
//! the last-level cache), `HOT=2` one small product that stays in L2: the kernels' arithmetic
//! without the memory. `ALIGN=1` starts the half-precision weights on a cache line.

use std::time::Instant;

use auris_kernels::gemv::gemv_batch;
use auris_kernels::halfgemv::{gemv_half_batch, HalfKind};
use auris_kernels::packed::{packed_batch, PackedHalf};
use auris_kernels::qgemv::{qgemv_batch, BlockKind, QuantRow, BLOCK};
use half::{bf16, f16};

/// (in, out) of each product of one layer, then the head.
const LAYER: [(usize, usize); 4] = [(896, 1152), (896, 896), (896, 9728), (4864, 896)];
const LAYERS: usize = 24;
const HEAD: (usize, usize) = (896, 151_936);

enum Weights {
    Half(HalfKind, Vec<Vec<u16>>),
    F32(Vec<Vec<f32>>),
    Q8(Vec<Vec<u8>>),
    Packed(Vec<PackedHalf>),
}

/// `n` rows of `k / 32` GGML q8_0 blocks: an f16 scale and 32 signed bytes each.
fn q8_blocks(k: usize, n: usize) -> Vec<u8> {
    let scale = f16::from_f32(0.002).to_bits().to_le_bytes();
    (0..n * k / BLOCK)
        .flat_map(|b| {
            let qs = (0..BLOCK).map(move |i| ((b * 31 + i * 17) % 255) as u8);
            scale.into_iter().chain(qs)
        })
        .collect()
}

fn value(i: usize, m: usize) -> f32 {
    ((i * 2_654_435_761 % m) as f32 / m as f32 - 0.5) * 0.1
}

fn shapes() -> Vec<(usize, usize)> {
    // HOT=1: one layer's products only, whose weights stay in the last-level cache.
    // HOT=2: one small product whose weights stay in the L2 cache.
    match std::env::var("HOT").as_deref() {
        Ok("2") => return vec![(896, 128)],
        Ok(_) => return LAYER.to_vec(),
        Err(_) => {}
    }
    let mut s: Vec<(usize, usize)> = (0..LAYERS).flat_map(|_| LAYER).collect();
    s.push(HEAD);
    s
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let kind = args.first().map_or("bf16", String::as_str);
    let batches: Vec<usize> = args
        .get(1)
        .map_or("1,2,4,8", String::as_str)
        .split(',')
        .filter_map(|b| b.parse().ok())
        .collect();
    let steps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(12);
    let shapes = shapes();
    let weights = match kind {
        "q8_0" => Weights::Q8(shapes.iter().map(|&(k, n)| q8_blocks(k, n)).collect()),
        "packed" | "packed-f16" => {
            let half = if kind == "packed" {
                HalfKind::Bf16
            } else {
                HalfKind::F16
            };
            let mut packing = 0.0;
            let packed = shapes
                .iter()
                .map(|&(k, n)| {
                    let w: Vec<u16> = (0..k * n)
                        .map(|i| match half {
                            HalfKind::Bf16 => bf16::from_f32(value(i, 1009)).to_bits(),
                            HalfKind::F16 => f16::from_f32(value(i, 1009)).to_bits(),
                        })
                        .collect();
                    let t = Instant::now();
                    let p = PackedHalf::pack(half, &w, n, k);
                    packing += t.elapsed().as_secs_f64();
                    p
                })
                .collect();
            println!("packed in {packing:.2} s");
            Weights::Packed(packed)
        }
        "f32" => Weights::F32(
            shapes
                .iter()
                .map(|&(k, n)| (0..k * n).map(|i| value(i, 1009)).collect())
                .collect(),
        ),
        _ => {
            let half = if kind == "f16" {
                HalfKind::F16
            } else {
                HalfKind::Bf16
            };
            let bits = |v: f32| match half {
                HalfKind::Bf16 => bf16::from_f32(v).to_bits(),
                HalfKind::F16 => f16::from_f32(v).to_bits(),
            };
            Weights::Half(
                half,
                shapes
                    .iter()
                    .map(|&(k, n)| (0..k * n + 32).map(|i| bits(value(i, 1009))).collect())
                    .collect(),
            )
        }
    };
    let params: usize = shapes.iter().map(|&(k, n)| k * n).sum();
    let bytes = match kind {
        "f32" => params * 4,
        "q8_0" => params / BLOCK * (BLOCK + 2),
        _ => params * 2,
    };
    println!(
        "{kind}: {:.2} GB of weights, {} threads",
        bytes as f64 / 1e9,
        rayon::current_num_threads()
    );
    let (peak, level) = auris_kernels::peak::fma_peak_flops(20_000_000, 3);
    println!("FMA peak {:.0} GFLOP/s ({level})", peak / 1e9);
    let mut first = None;
    for &batch in &batches {
        let xs: Vec<Vec<f32>> = shapes
            .iter()
            .map(|&(k, _)| (0..batch * k).map(|i| value(i + 7, 997)).collect())
            .collect();
        let mut outs: Vec<Vec<f32>> = shapes.iter().map(|&(_, n)| vec![0.0; batch * n]).collect();
        let mut times = Vec::new();
        // Seconds per (in, out) shape over the timed steps.
        let mut per_shape: Vec<((usize, usize), f64)> = Vec::new();
        for step in 0..steps + 1 {
            let t = Instant::now();
            for (i, out) in outs.iter_mut().enumerate() {
                let s = Instant::now();
                match &weights {
                    Weights::Half(h, w) => {
                        let w = &w[i];
                        let skip = if std::env::var_os("ALIGN").is_some() {
                            (64 - w.as_ptr() as usize % 64) % 64 / 2
                        } else {
                            0
                        };
                        let (k, n) = shapes[i];
                        gemv_half_batch(*h, &xs[i], batch, &w[skip..skip + k * n], None, out)
                    }
                    Weights::F32(w) => gemv_batch(&xs[i], batch, &w[i], None, out),
                    Weights::Packed(w) => packed_batch(&xs[i], batch, &w[i], None, out),
                    Weights::Q8(w) => {
                        let k = shapes[i].0;
                        let rows: Vec<QuantRow> =
                            xs[i].chunks_exact(k).map(QuantRow::new).collect();
                        qgemv_batch(BlockKind::Q8_0, &rows, &w[i], None, out)
                    }
                }
                if step > 0 {
                    let e = s.elapsed().as_secs_f64();
                    match per_shape.iter_mut().find(|(sh, _)| *sh == shapes[i]) {
                        Some((_, acc)) => *acc += e,
                        None => per_shape.push((shapes[i], e)),
                    }
                }
            }
            times.push(t.elapsed().as_secs_f64());
        }
        times.remove(0);
        times.sort_by(f64::total_cmp);
        let t = times[times.len() / 2];
        let rate = batch as f64 / t;
        let base = *first.get_or_insert(rate);
        println!(
            "batch {batch}: {:.1} ms per step, {:.1} GB/s, {:.1} GFLOP/s, {:.1} rows/s ({:.2}x batch 1)",
            t * 1e3,
            bytes as f64 / t / 1e9,
            2.0 * (params * batch) as f64 / t / 1e9,
            rate,
            rate / base
        );
        for ((k, n), secs) in &per_shape {
            let count = shapes.iter().filter(|s| **s == (*k, *n)).count();
            let flops = 2.0 * (k * n * batch * count * steps) as f64;
            print!(
                "  {k}->{n}: {:.1} ms {:.0} GFLOP/s",
                secs / steps as f64 * 1e3,
                flops / secs / 1e9
            );
        }
        println!();
        std::hint::black_box(&outs);
    }
}
