//! Times `linear` with f32 and bf16 weights on the shapes of a Qwen2.5-0.5B-class decoder layer.
//!
//! ```text
//! cargo run --release -p auris-kernels --example linear_bench -- [ROWS] [REPEAT]
//! ```
//!
//! Threads follow `RAYON_NUM_THREADS`. Prints the minimum time of each shape and weight type,
//! and their sum over one layer. The weights stay in the cache between repetitions here, unlike
//! in a whole model, so `decode_bench` (auris-llm) is the measure of a real prefill.

use std::time::Instant;

use auris_kernels::linear::{linear, Act, Rows, Weight};
use half::bf16;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rows = args.first().copied().unwrap_or(512);
    let repeat = args.get(1).copied().unwrap_or(10);
    // (in, out, products per layer): q and o, k and v, gate and up, down.
    let shapes = [
        (896, 896, 2.0),
        (896, 128, 2.0),
        (896, 4864, 2.0),
        (4864, 896, 1.0),
    ];
    let mut total = [0.0f64; 2];
    for (k, out, per_layer) in shapes {
        let x: Vec<f32> = (0..rows * k)
            .map(|i| ((i % 97) as f32 - 48.0) / 97.0)
            .collect();
        let w32: Vec<f32> = (0..out * k)
            .map(|i| ((i % 89) as f32 - 44.0) / 890.0)
            .collect();
        let w16: Vec<bf16> = w32.iter().map(|&v| bf16::from_f32(v)).collect();
        let mut best = [f64::MAX; 2];
        for _ in 0..repeat {
            for (i, w) in [Weight::F32(&w32), Weight::Bf16(&w16)]
                .into_iter()
                .enumerate()
            {
                let t = Instant::now();
                let y = linear(Rows::dense(&x, rows), w, out, None, Act::Identity);
                best[i] = best[i].min(t.elapsed().as_secs_f64());
                std::hint::black_box(y);
            }
        }
        println!(
            "{rows}x{k} -> {out}: f32 {:.2} ms, bf16 {:.2} ms ({:.3}x)",
            best[0] * 1e3,
            best[1] * 1e3,
            best[1] / best[0]
        );
        total[0] += best[0] * per_layer;
        total[1] += best[1] * per_layer;
    }
    println!(
        "one layer: f32 {:.2} ms, bf16 {:.2} ms ({:.3}x)",
        total[0] * 1e3,
        total[1] * 1e3,
        total[1] / total[0]
    );
}
