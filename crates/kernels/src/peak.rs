//! The machine's f32 multiply-add peak, measured: the ceiling the matrix products of the
//! encoder and the prefill are compared with (`auris bench` reports each stage's GFLOP/s as a
//! fraction of it).
//!
//! As many OS threads as the current rayon pool has, released together by a barrier, run
//! independent fused multiply-add chains on registers only (no memory traffic), at the widest
//! vector width the CPU has ([`Cpu::simd`]: AVX-512F, AVX2+FMA, else the compiler's code for
//! `f32::mul_add`). Twelve chains cover the latency of two FMA pipes of four cycles each. The
//! threads are plain scoped threads, not rayon tasks: a
//! rayon worker that is slow to wake lets another worker run both tasks one after the other,
//! which reported a 2-core machine's peak as one core's.

use std::time::Instant;

use std::sync::Barrier;

use crate::cpu::{Cpu, Simd};

/// Independent accumulators per thread.
const CHAINS: usize = 12;

/// Floating-point operations per second (one FMA = 2) of all the pool's threads together: the
/// best of `repeats` runs of `iterations` steps per thread.
pub fn fma_peak_flops(iterations: usize, repeats: usize) -> (f64, &'static str) {
    let (simd, name) = level();
    let threads = rayon::current_num_threads();
    let mut best = f64::INFINITY;
    for _ in 0..repeats.max(1) {
        let barrier = Barrier::new(threads + 1);
        // Each worker clocks its own run; the span from the first start to the last end is the
        // time of the whole. (The calling thread's clock after the barrier started late when
        // it was not scheduled before the workers finished, which reported absurd peaks under
        // real-time scheduling.)
        let elapsed = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let barrier = &barrier;
                    scope.spawn(move || {
                        barrier.wait();
                        let start = Instant::now();
                        let sink = run(simd, iterations, t as f32);
                        (start, Instant::now(), sink)
                    })
                })
                .collect();
            barrier.wait();
            let spans: Vec<_> = workers.into_iter().filter_map(|w| w.join().ok()).collect();
            let first = spans.iter().map(|s| s.0).min();
            let last = spans.iter().map(|s| s.1).max();
            std::hint::black_box(spans.iter().map(|s| s.2).sum::<f32>());
            match (first, last) {
                (Some(first), Some(last)) => last.duration_since(first).as_secs_f64(),
                _ => f64::INFINITY,
            }
        });
        best = best.min(elapsed);
    }
    let flops = (threads * iterations * CHAINS * simd.lanes() * 2) as f64;
    (flops / best, name)
}

/// The vector level the chains run at, and its name in reports.
fn level() -> (Simd, &'static str) {
    let simd = Cpu::detected().simd();
    let name = match simd {
        Simd::Avx512 => "avx512f",
        Simd::Avx2 => "avx2+fma",
        Simd::Portable => "portable",
    };
    (simd, name)
}

fn run(simd: Simd, iterations: usize, seed: f32) -> f32 {
    match simd {
        // SAFETY: `simd` comes from `Cpu::detected`: this CPU has the kernel's features.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx512 => unsafe { x86::chains_avx512(iterations, seed) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => unsafe { x86::chains_avx2(iterations, seed) },
        _ => chains_portable(iterations, seed),
    }
}

fn chains_portable(iterations: usize, seed: f32) -> f32 {
    let mut acc = [seed; CHAINS];
    let (a, b) = (
        std::hint::black_box(0.999_999f32),
        std::hint::black_box(1e-7f32),
    );
    for _ in 0..iterations {
        for x in acc.iter_mut() {
            *x = x.mul_add(a, b);
        }
    }
    acc.iter().sum()
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::CHAINS;

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn chains_avx512(iterations: usize, seed: f32) -> f32 {
        let a = _mm512_set1_ps(std::hint::black_box(0.999_999));
        let b = _mm512_set1_ps(std::hint::black_box(1e-7));
        let mut acc = [_mm512_set1_ps(seed); CHAINS];
        for _ in 0..iterations {
            for x in acc.iter_mut() {
                *x = _mm512_fmadd_ps(*x, a, b);
            }
        }
        acc.iter().map(|&v| _mm512_reduce_add_ps(v)).sum()
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn chains_avx2(iterations: usize, seed: f32) -> f32 {
        let a = _mm256_set1_ps(std::hint::black_box(0.999_999));
        let b = _mm256_set1_ps(std::hint::black_box(1e-7));
        let mut acc = [_mm256_set1_ps(seed); CHAINS];
        for _ in 0..iterations {
            for x in acc.iter_mut() {
                *x = _mm256_fmadd_ps(*x, a, b);
            }
        }
        let mut lanes = [0.0f32; 8];
        let mut total = 0.0;
        for v in acc {
            _mm256_storeu_ps(lanes.as_mut_ptr(), v);
            total += lanes.iter().sum::<f32>();
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::Feature;

    /// The chains compute what they claim (x -> a x + b, `iterations` times), at every level.
    #[test]
    fn chains_compute_the_recurrence() {
        let (a, b) = (0.999_999f64, 1e-7f64);
        let mut x = 2.0f64;
        for _ in 0..1000 {
            x = x * a + b;
        }
        let want = (x * CHAINS as f64) as f32;
        let close = |got: f32, lanes: f32| ((got / lanes) - want).abs() < 1e-4 * want.abs();
        assert!(close(chains_portable(1000, 2.0), 1.0));
        let cpu = Cpu::detected();
        #[cfg(target_arch = "x86_64")]
        {
            if cpu.has(Feature::Avx512) {
                // SAFETY: detected above.
                assert!(close(unsafe { x86::chains_avx512(1000, 2.0) }, 16.0));
            }
            if cpu.has(Feature::Avx2) {
                // SAFETY: detected above.
                assert!(close(unsafe { x86::chains_avx2(1000, 2.0) }, 8.0));
            }
        }
        assert_eq!(level().0, cpu.simd());
        let (flops, _) = fma_peak_flops(1000, 1);
        assert!(flops.is_finite() && flops > 0.0);
    }
}
