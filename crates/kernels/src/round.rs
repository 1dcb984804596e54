//! The precision the matrix products take their inputs in ([`Compute`]), the rounding of f32
//! values to bf16 that the bf16 mode applies, and the rule that picks a mode when the user
//! leaves it to the engine ([`resolve_auto`]).
//!
//! bf16 compute, as PyTorch's bf16 matmuls and llama.cpp's bf16 path (`vec_dot_type =
//! GGML_TYPE_BF16`) do it: both operands of every product are bf16 values (rounded to nearest,
//! ties to even; NaN stays NaN, infinities and signed zeros stay, subnormals round like any
//! other value) and the products are accumulated in f32. A bf16 value widened to f32 is exact,
//! so an f32 product of operands rounded to bf16 is that result up to summation order: the
//! f32 kernels on rounded inputs are the scalar reference a bf16 matrix unit (`vdpbf16ps`,
//! AMX `tdpbf16ps`) is checked against. Each activation matrix is rounded once per product,
//! by [`round_bf16_in_place`] (AVX2 or portable, the values split over the rayon pool).

use std::fmt;

use rayon::prelude::*;

use crate::cpu::{Cpu, Feature, Simd};

/// The precision of the matrix products' inputs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Compute {
    /// f32 inputs and f32 accumulation: the exact path.
    #[default]
    F32,
    /// Inputs rounded to bf16 (round to nearest even), f32 accumulation.
    Bf16,
}

impl Compute {
    /// The name the command line and the reports use: `f32` or `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            Compute::F32 => "f32",
            Compute::Bf16 => "bf16",
        }
    }

    /// Rounds `xs` in place to this precision: nothing for f32, [`round_bf16_in_place`] for
    /// bf16.
    pub fn round_in_place(self, xs: &mut [f32]) {
        if self == Compute::Bf16 {
            round_bf16_in_place(xs);
        }
    }
}

impl fmt::Display for Compute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `x` rounded to the nearest bf16 (ties to even), as f32: the scalar reference of the vector
/// paths. A NaN stays a NaN (quiet, sign and upper payload kept); values past the largest bf16
/// round to infinity, as IEEE rounding does.
pub fn round_bf16(x: f32) -> f32 {
    let bits = x.to_bits();
    if bits & 0x7fff_ffff > 0x7f80_0000 {
        return f32::from_bits((bits | 0x0040_0000) & 0xffff_0000);
    }
    // Adding 0x7fff plus the lowest kept bit carries into the kept bits exactly when the
    // dropped half is above one half, or equal to it with an odd kept part.
    let bias = 0x7fff + ((bits >> 16) & 1);
    f32::from_bits(bits.wrapping_add(bias) & 0xffff_0000)
}

/// Values per task of a parallel rounding.
const CHUNK: usize = 1 << 14;

/// Rounds every value of `xs` to bf16 ([`round_bf16`]), on the current rayon pool, at the best
/// level of this CPU.
pub fn round_bf16_in_place(xs: &mut [f32]) {
    let cpu = Cpu::detected();
    if xs.len() <= CHUNK {
        return round_bf16_at(cpu, xs);
    }
    xs.par_chunks_mut(CHUNK)
        .for_each(|chunk| round_bf16_at(cpu, chunk));
}

/// `xs` copied and rounded to bf16.
pub fn rounded_bf16(xs: &[f32]) -> Vec<f32> {
    let mut out = xs.to_vec();
    round_bf16_in_place(&mut out);
    out
}

/// [`round_bf16_in_place`] on one thread with the features `cpu` allows (the tests run every
/// level this CPU has). AVX2 rounds 8 values per step; a CPU with AVX-512 takes the AVX2 path
/// (rounding is a small part of a product's time).
pub fn round_bf16_at(cpu: Cpu, xs: &mut [f32]) {
    match cpu.simd() {
        // SAFETY: `cpu` holds AVX2 (AVX-512 includes it).
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 | Simd::Avx512 => unsafe { x86::round_bf16_avx2(xs) },
        _ => xs.iter_mut().for_each(|x| *x = round_bf16(*x)),
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU has AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn round_bf16_avx2(xs: &mut [f32]) {
        let n = xs.len() / 8 * 8;
        let one = _mm256_set1_epi32(1);
        let half_ulp = _mm256_set1_epi32(0x7fff);
        let keep = _mm256_set1_epi32(0xffff_0000u32 as i32);
        let abs = _mm256_set1_epi32(0x7fff_ffff);
        let inf = _mm256_set1_epi32(0x7f80_0000);
        let quiet = _mm256_set1_epi32(0x0040_0000);
        for i in (0..n).step_by(8) {
            // SAFETY: i + 8 <= n <= xs.len(); unaligned load and store.
            unsafe {
                let p = xs.as_mut_ptr().add(i);
                let bits = _mm256_loadu_si256(p as *const __m256i);
                let lsb = _mm256_and_si256(_mm256_srli_epi32::<16>(bits), one);
                let bias = _mm256_add_epi32(half_ulp, lsb);
                let rounded = _mm256_and_si256(_mm256_add_epi32(bits, bias), keep);
                // |x| > inf as signed integers (both non-negative): a NaN.
                let nan = _mm256_cmpgt_epi32(_mm256_and_si256(bits, abs), inf);
                let quieted = _mm256_and_si256(_mm256_or_si256(bits, quiet), keep);
                let out = _mm256_blendv_epi8(rounded, quieted, nan);
                _mm256_storeu_si256(p as *mut __m256i, out);
            }
        }
        xs[n..].iter_mut().for_each(|x| *x = super::round_bf16(*x));
    }
}

/// A bf16 matrix unit a CPU may have, fastest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bf16Unit {
    /// Intel AMX tiles with `tdpbf16ps`.
    AmxBf16,
    /// AVX512-BF16's `vdpbf16ps` (AMD Zen 4/5, Intel since Cooper Lake).
    Avx512Bf16,
}

impl Bf16Unit {
    /// The units `cpu` has, fastest first.
    pub fn of(cpu: Cpu) -> Vec<Bf16Unit> {
        [
            (Feature::AmxBf16, Bf16Unit::AmxBf16),
            (Feature::Avx512Bf16, Bf16Unit::Avx512Bf16),
        ]
        .into_iter()
        .filter(|&(f, _)| cpu.has(f))
        .map(|(_, u)| u)
        .collect()
    }

    /// The `/proc/cpuinfo` flag of the unit.
    pub fn name(self) -> &'static str {
        match self {
            Bf16Unit::AmxBf16 => Feature::AmxBf16.name(),
            Bf16Unit::Avx512Bf16 => Feature::Avx512Bf16.name(),
        }
    }
}

/// Why [`resolve_auto`] chose its mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AutoReason {
    /// The checkpoint stores f32 weights: bf16 would round them, f32 keeps them.
    F32Weights,
    /// The CPU has no bf16 matrix unit, so bf16 compute would be rounding without a faster
    /// product.
    NoBf16Unit,
    /// The CPU has these units but auris has no kernel for any of them yet, so nothing can be
    /// measured faster than the f32 path.
    NoKernel(Vec<Bf16Unit>),
}

impl fmt::Display for AutoReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AutoReason::F32Weights => f.write_str("the checkpoint stores f32 weights"),
            AutoReason::NoBf16Unit => {
                f.write_str("this CPU has no bf16 matrix unit (amx_bf16 or avx512_bf16)")
            }
            AutoReason::NoKernel(units) => {
                let names: Vec<&str> = units.iter().map(|u| u.name()).collect();
                write!(
                    f,
                    "auris has no kernel for this CPU's {} yet",
                    names.join(" or ")
                )
            }
        }
    }
}

/// What `auto` computes in: bf16 when the checkpoint stores half-precision weights
/// (`half_weights`: bf16 or f16), `cpu` has a bf16 matrix unit ([`Bf16Unit`]), and a start-up
/// probe measures that unit's kernel faster than the f32 kernel; f32 otherwise, with the
/// reason. The probe runs once the unit has a kernel; none exists yet, so on every CPU today
/// the answer is f32 (a CPU with a unit says [`AutoReason::NoKernel`]).
pub fn resolve_auto(cpu: Cpu, half_weights: bool) -> (Compute, AutoReason) {
    if !half_weights {
        return (Compute::F32, AutoReason::F32Weights);
    }
    let units = Bf16Unit::of(cpu);
    if units.is_empty() {
        return (Compute::F32, AutoReason::NoBf16Unit);
    }
    // The probe's place: time each unit's kernel against the f32 one on a product of the
    // model's shape and keep bf16 when one wins. Without a kernel there is nothing to time.
    (Compute::F32, AutoReason::NoKernel(units))
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    /// The rounding as the `half` crate defines it (its own software conversion).
    fn half_crate(x: f32) -> f32 {
        bf16::from_f32(x).to_f32()
    }

    /// Values that exercise every branch: ties both ways, the largest values, subnormals,
    /// zeros, infinities, NaNs with payloads, and a sweep of bit patterns.
    fn cases() -> Vec<f32> {
        let mut v: Vec<f32> = [
            0x3f80_8000u32, // 1 + 2^-8: a tie, kept part even -> down
            0x3f81_8000,    // a tie, kept part odd -> up
            0x3f80_8001,    // above the tie -> up
            0x3f80_7fff,    // below the tie -> down
            0x7f7f_ffff,    // f32::MAX -> inf
            0x7f7f_7fff,    // stays finite
            0xff7f_8000,    // -tie at the top, odd -> -inf
            0x0000_0001,    // smallest subnormal -> 0
            0x0000_8000,    // subnormal tie, even -> 0
            0x0001_8000,    // subnormal tie, odd -> up
            0x807f_ffff,    // -largest subnormal -> -smallest normal
            0x0000_0000,
            0x8000_0000,
            0x7f80_0000,
            0xff80_0000,
            0x7fc0_0000,
            0x7f80_0001, // signalling NaN whose payload is all dropped
            0xffbf_ffff, // negative NaN
        ]
        .into_iter()
        .map(f32::from_bits)
        .collect();
        let mut s = 0x9e37_79b9u32;
        for _ in 0..20_000 {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            v.push(f32::from_bits(s));
        }
        v
    }

    fn same(a: f32, b: f32) -> bool {
        a.to_bits() == b.to_bits()
    }

    #[test]
    fn scalar_rounding_is_nearest_even_and_keeps_nan() {
        let r = |bits: u32| round_bf16(f32::from_bits(bits)).to_bits();
        assert_eq!(r(0x3f80_8000), 0x3f80_0000);
        assert_eq!(r(0x3f81_8000), 0x3f82_0000);
        assert_eq!(r(0x3f80_8001), 0x3f81_0000);
        assert_eq!(r(0x3f80_7fff), 0x3f80_0000);
        assert_eq!(r(0x7f7f_ffff), 0x7f80_0000);
        assert_eq!(r(0x0000_0001), 0);
        assert_eq!(r(0x0001_8000), 0x0002_0000);
        assert_eq!(r(0x807f_ffff), 0x8080_0000);
        assert_eq!(r(0x8000_0000), 0x8000_0000);
        assert_eq!(r(0xff80_0000), 0xff80_0000);
        assert!(round_bf16(f32::from_bits(0x7f80_0001)).is_nan());
        assert!(round_bf16(f32::from_bits(0xffbf_ffff)).is_sign_negative());
        for x in cases() {
            let y = round_bf16(x);
            assert!(same(y, half_crate(x)), "{:#010x}", x.to_bits());
            assert_eq!(y.to_bits() & 0xffff, 0, "{:#010x} is not bf16", x.to_bits());
            assert!(
                same(round_bf16(y), y),
                "rounding twice changes {:#010x}",
                x.to_bits()
            );
        }
    }

    /// Every level this CPU has gives the scalar result bit for bit, on lengths that cut the
    /// vector width, and the parallel entry point on 1-3 threads too.
    #[test]
    fn every_level_and_thread_count_equals_the_scalar_rounding() {
        let all = cases();
        let want: Vec<f32> = all.iter().map(|&x| round_bf16(x)).collect();
        for level in crate::cpu::tests::levels() {
            for len in [0, 1, 7, 8, 9, 17, all.len()] {
                let mut got = all[..len].to_vec();
                round_bf16_at(level, &mut got);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(same(*g, *w), "{level:?} len {len} [{i}]");
                }
            }
        }
        let long: Vec<f32> = all.iter().cycle().take(5 * CHUNK + 3).copied().collect();
        for threads in 1..=3 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let got = pool.install(|| rounded_bf16(&long));
            for (g, x) in got.iter().zip(&long) {
                assert!(same(*g, round_bf16(*x)), "{threads} threads");
            }
        }
        let mut f32_mode = long.clone();
        Compute::F32.round_in_place(&mut f32_mode);
        assert!(f32_mode.iter().zip(&long).all(|(a, b)| same(*a, *b)));
    }

    #[test]
    fn auto_is_f32_until_a_bf16_kernel_exists() {
        let cpu = Cpu::detected();
        assert_eq!(
            resolve_auto(cpu, false),
            (Compute::F32, AutoReason::F32Weights)
        );
        assert_eq!(
            resolve_auto(Cpu::portable(), true),
            (Compute::F32, AutoReason::NoBf16Unit)
        );
        // SAFETY: the value reaches only `has`, never a kernel.
        let amx = unsafe { Cpu::assume(&[Feature::AmxBf16, Feature::Avx512Bf16]) };
        let (compute, reason) = resolve_auto(amx, true);
        assert_eq!(compute, Compute::F32);
        assert_eq!(
            reason,
            AutoReason::NoKernel(vec![Bf16Unit::AmxBf16, Bf16Unit::Avx512Bf16])
        );
        assert_eq!(
            reason.to_string(),
            "auris has no kernel for this CPU's amx_bf16 or avx512_bf16 yet"
        );
    }
}
