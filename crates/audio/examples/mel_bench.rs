//! Times the front-end on synthetic audio: one 30 s log-mel window (128 and 80 bins) and the
//! resampling of 30 s from 48 kHz and 44.1 kHz. Run with
//! `cargo run --release -p auris-audio --example mel_bench`.

use std::time::{Duration, Instant};

use auris_audio::{resample, AudioError, MelConfig, MelExtractor, CHUNK_SAMPLES, SAMPLE_RATE};

/// Deterministic speech-like test signal: a few tones plus LCG noise.
fn signal(len: usize, rate: u32) -> Vec<f32> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    (0..len)
        .map(|i| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let noise = ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.05;
            let t = i as f32 / rate as f32;
            let tones: f32 = [220.0f32, 1250.0, 3100.0]
                .iter()
                .map(|f| (2.0 * std::f32::consts::PI * f * t).sin() * 0.2)
                .sum();
            tones + noise
        })
        .collect()
}

/// Best of `runs` timings of `f`.
fn best<T>(
    runs: usize,
    mut f: impl FnMut() -> Result<T, AudioError>,
) -> Result<Duration, AudioError> {
    let mut best = Duration::MAX;
    for _ in 0..runs {
        let t0 = Instant::now();
        std::hint::black_box(f()?);
        best = best.min(t0.elapsed());
    }
    Ok(best)
}

fn main() -> Result<(), AudioError> {
    let x = signal(CHUNK_SAMPLES, SAMPLE_RATE);
    for n_mels in [128, 80] {
        let t0 = Instant::now();
        let ex = MelExtractor::new(MelConfig::whisper(n_mels))?;
        let setup = t0.elapsed();
        let t = best(10, || ex.window(&x))?;
        println!("log-mel {n_mels:>3} bins, one 30 s window: {t:?} (best of 10; setup {setup:?})");
    }
    for from in [48_000u32, 44_100, 8_000] {
        let y = signal(30 * from as usize, from);
        let t = best(3, || resample(&y, from, SAMPLE_RATE))?;
        println!("resample 30 s {from} Hz -> 16 kHz: {t:?} (best of 3)");
    }
    Ok(())
}
