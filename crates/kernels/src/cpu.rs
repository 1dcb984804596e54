//! The CPU features a kernel may use, in one type that cannot lie: a [`Cpu`] is made by
//! run-time detection ([`Cpu::detected`]), by claiming nothing ([`Cpu::portable`]), by dropping
//! features from another one ([`Cpu::only`], [`Cpu::without`]), or by an `unsafe` promise
//! ([`Cpu::assume`]). Every kernel of the workspace that runs `#[target_feature]` code takes
//! one (or detects one itself) and reaches that code only for the features it holds, so no
//! safe function can run an instruction the CPU lacks (the idea of pulp's `Arch` tokens and
//! of std's `is_x86_feature_detected!`).
//!
//! Each [`Feature`] names a set that a kernel can rely on as a whole (AVX2 comes with FMA and
//! F16C, the AVX-512 extensions with AVX-512F and AVX2), so any subset of a detected `Cpu` is
//! still true of the machine.
//!
//! The vector sets come from `is_x86_feature_detected!` (which also checks that the operating
//! system saves the vector registers). The matrix units and AVX512-BF16 are read from CPUID
//! leaf 7 (subleaf 0 EDX bits 22, 24, 25: AMX-BF16, AMX-TILE, AMX-INT8; subleaf 1 EAX bit 5:
//! AVX512_BF16), AMX only when XCR0 says the operating system saves the tile state (bits 17
//! and 18). Linux also wants a per-process permission (`arch_prctl(ARCH_REQ_XCOMP_PERM)`)
//! before the first tile instruction: a kernel using AMX asks for it; detection does not.

use std::fmt;
use std::sync::OnceLock;

/// A set of instructions a kernel may use when the CPU has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feature {
    /// AVX2 with FMA and F16C: 8 f32 lanes, fused multiply-add, f16 conversion.
    Avx2,
    /// AVX-512F and [`Feature::Avx2`]: 16 f32 lanes.
    Avx512,
    /// AVX-VNNI (the VEX-encoded 256-bit `vpdpbusd`) and [`Feature::Avx2`].
    AvxVnni,
    /// AVX512-VNNI with AVX512VL (the EVEX-encoded `vpdpbusd`, also on 256 bits) and
    /// [`Feature::Avx512`].
    Avx512Vnni,
    /// AVX512-BF16 (`vdpbf16ps`, `vcvtne2ps2bf16`) and [`Feature::Avx512`].
    Avx512Bf16,
    /// AMX tiles (`ldtilecfg`, `tileloadd`, `tilestored`), with the operating system saving
    /// their state.
    AmxTile,
    /// AMX-BF16 (`tdpbf16ps`) and [`Feature::AmxTile`].
    AmxBf16,
    /// AMX-INT8 (`tdpbssd` and its kin) and [`Feature::AmxTile`].
    AmxInt8,
}

impl Feature {
    /// Every feature, in the order [`Cpu::levels`] lists them.
    pub const ALL: [Feature; 8] = [
        Feature::Avx2,
        Feature::Avx512,
        Feature::AvxVnni,
        Feature::Avx512Vnni,
        Feature::Avx512Bf16,
        Feature::AmxTile,
        Feature::AmxBf16,
        Feature::AmxInt8,
    ];

    fn bit(self) -> u16 {
        1 << self as u16
    }

    /// This feature's bit and those of the features it includes.
    fn with_implied(self) -> u16 {
        let base = match self {
            Feature::Avx2 | Feature::AmxTile => 0,
            Feature::Avx512 | Feature::AvxVnni => Feature::Avx2.with_implied(),
            Feature::Avx512Vnni | Feature::Avx512Bf16 => Feature::Avx512.with_implied(),
            Feature::AmxBf16 | Feature::AmxInt8 => Feature::AmxTile.with_implied(),
        };
        base | self.bit()
    }

    /// The name `/proc/cpuinfo` and the reports use.
    pub fn name(self) -> &'static str {
        match self {
            Feature::Avx2 => "avx2+fma+f16c",
            Feature::Avx512 => "avx512f",
            Feature::AvxVnni => "avx_vnni",
            Feature::Avx512Vnni => "avx512_vnni",
            Feature::Avx512Bf16 => "avx512_bf16",
            Feature::AmxTile => "amx_tile",
            Feature::AmxBf16 => "amx_bf16",
            Feature::AmxInt8 => "amx_int8",
        }
    }
}

/// The widest f32 vectors a [`Cpu`] allows: what most kernels dispatch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Simd {
    /// Scalar code (which the compiler may vectorise for the build's baseline).
    Portable,
    /// [`Feature::Avx2`], 8 lanes.
    Avx2,
    /// [`Feature::Avx512`], 16 lanes.
    Avx512,
}

impl Simd {
    /// f32 values per vector.
    pub fn lanes(self) -> usize {
        match self {
            Simd::Portable => 1,
            Simd::Avx2 => 8,
            Simd::Avx512 => 16,
        }
    }
}

/// Features this CPU is known to have. Holding one is the proof a kernel needs before it runs
/// `#[target_feature]` code: see the module documentation for the only ways to make one.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cpu {
    bits: u16,
}

impl Cpu {
    /// The features of the CPU this runs on, detected once per process.
    pub fn detected() -> Cpu {
        static DETECTED: OnceLock<Cpu> = OnceLock::new();
        *DETECTED.get_or_init(|| Cpu { bits: detect() })
    }

    /// No feature: the portable code of every kernel.
    pub const fn portable() -> Cpu {
        Cpu { bits: 0 }
    }

    /// A `Cpu` that claims `features` (and what each includes, see [`Feature`]).
    ///
    /// # Safety
    /// The CPU running every kernel this value reaches must have those features; a kernel
    /// given one it lacks executes instructions the CPU does not have (undefined behaviour).
    pub unsafe fn assume(features: &[Feature]) -> Cpu {
        Cpu {
            bits: features.iter().fold(0, |b, f| b | f.with_implied()),
        }
    }

    /// Whether the CPU has `feature` (and what it includes).
    pub fn has(self, feature: Feature) -> bool {
        let need = feature.with_implied();
        self.bits & need == need
    }

    /// The features of `self` that `keep` names or includes: a subset, so still true.
    pub fn only(self, keep: &[Feature]) -> Cpu {
        let mask = keep.iter().fold(0, |b, f| b | f.with_implied());
        Cpu {
            bits: self.bits & mask,
        }
    }

    /// `self` without `feature` and the features that include it: still true.
    pub fn without(self, feature: Feature) -> Cpu {
        let bits = Feature::ALL
            .into_iter()
            .filter(|f| f.with_implied() & feature.bit() != 0)
            .fold(self.bits, |b, f| b & !f.bit());
        Cpu { bits }
    }

    /// The widest f32 vectors allowed.
    pub fn simd(self) -> Simd {
        if self.has(Feature::Avx512) {
            Simd::Avx512
        } else if self.has(Feature::Avx2) {
            Simd::Avx2
        } else {
            Simd::Portable
        }
    }

    /// The features held, in [`Feature::ALL`]'s order.
    pub fn features(self) -> impl Iterator<Item = Feature> {
        Feature::ALL.into_iter().filter(move |&f| self.has(f))
    }

    /// Every level a kernel may run at on this CPU: the portable one first, then for each
    /// feature held, that feature alone with what it includes. The tests run each kernel at
    /// all of them, so every code path this CPU can take is checked.
    pub fn levels(self) -> Vec<Cpu> {
        let mut levels = vec![Cpu::portable()];
        levels.extend(self.features().map(|f| self.only(&[f])));
        levels
    }
}

impl fmt::Debug for Cpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.features().map(Feature::name).collect();
        if names.is_empty() {
            f.write_str("Cpu(portable)")
        } else {
            write!(f, "Cpu({})", names.join(" "))
        }
    }
}

/// The feature bits of this CPU.
#[cfg(target_arch = "x86_64")]
fn detect() -> u16 {
    use std::arch::is_x86_feature_detected as has;

    let mut found = Vec::new();
    if has!("avx2") && has!("fma") && has!("f16c") {
        found.push(Feature::Avx2);
        if has!("avxvnni") {
            found.push(Feature::AvxVnni);
        }
        if has!("avx512f") {
            found.push(Feature::Avx512);
            if has!("avx512vnni") && has!("avx512vl") {
                found.push(Feature::Avx512Vnni);
            }
            if cpuid::avx512_bf16() {
                found.push(Feature::Avx512Bf16);
            }
        }
    }
    let amx = cpuid::amx();
    if amx.tile {
        found.push(Feature::AmxTile);
        if amx.bf16 {
            found.push(Feature::AmxBf16);
        }
        if amx.int8 {
            found.push(Feature::AmxInt8);
        }
    }
    found.iter().fold(0, |b, f| b | f.bit())
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> u16 {
    0
}

/// The CPUID bits std's detection does not offer on stable Rust.
#[cfg(target_arch = "x86_64")]
mod cpuid {
    use std::arch::x86_64::{__cpuid_count, CpuidResult};

    /// `cpuid(leaf, subleaf)`, or `None` when the CPU has no such leaf.
    fn leaf(leaf: u32, subleaf: u32) -> Option<CpuidResult> {
        // Leaf 0 reports the highest basic leaf; no leaf past it is asked for.
        let max = __cpuid_count(0, 0).eax;
        (leaf <= max).then(|| __cpuid_count(leaf, subleaf))
    }

    /// AVX512_BF16: leaf 7 subleaf 1, EAX bit 5 (subleaf 1 exists when leaf 7 subleaf 0's EAX
    /// is at least 1).
    pub(super) fn avx512_bf16() -> bool {
        let subleaves = leaf(7, 0).map_or(0, |r| r.eax);
        subleaves >= 1 && leaf(7, 1).is_some_and(|r| r.eax & (1 << 5) != 0)
    }

    /// The AMX bits of CPUID leaf 7, each only when the OS saves the tile state.
    pub(super) struct Amx {
        pub(super) tile: bool,
        pub(super) bf16: bool,
        pub(super) int8: bool,
    }

    pub(super) fn amx() -> Amx {
        let edx = leaf(7, 0).map_or(0, |r| r.edx);
        let os = tile_state_enabled();
        Amx {
            tile: os && edx & (1 << 24) != 0,
            bf16: os && edx & (1 << 22) != 0,
            int8: os && edx & (1 << 25) != 0,
        }
    }

    /// XCR0 bits 17 (XTILECFG) and 18 (XTILEDATA), read when CPUID.1:ECX.OSXSAVE (bit 27)
    /// says the OS has enabled `xgetbv`.
    fn tile_state_enabled() -> bool {
        let osxsave = leaf(1, 0).is_some_and(|r| r.ecx & (1 << 27) != 0);
        // SAFETY: OSXSAVE set means the CPU has XSAVE and the OS enabled XGETBV.
        osxsave && unsafe { xcr0() } & (0b11 << 17) == 0b11 << 17
    }

    /// # Safety
    /// The CPU has XSAVE and the OS has set CR4.OSXSAVE.
    #[target_feature(enable = "xsave")]
    unsafe fn xcr0() -> u64 {
        std::arch::x86_64::_xgetbv(0)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The levels the kernel tests iterate over.
    pub(crate) fn levels() -> Vec<Cpu> {
        Cpu::detected().levels()
    }

    #[test]
    fn subsets_stay_within_what_was_detected() {
        let cpu = Cpu::detected();
        for level in cpu.levels() {
            assert!(level.features().all(|f| cpu.has(f)), "{level:?} of {cpu:?}");
        }
        assert_eq!(cpu.levels()[0], Cpu::portable());
        assert_eq!(Cpu::portable().simd(), Simd::Portable);
        // SAFETY: the value only reaches `has`, `only` and `without`, never a kernel.
        let all = unsafe { Cpu::assume(&[Feature::Avx512Vnni, Feature::AmxBf16]) };
        assert!(all.has(Feature::Avx2) && all.has(Feature::Avx512) && all.has(Feature::AmxTile));
        assert!(!all.has(Feature::AvxVnni) && !all.has(Feature::AmxInt8));
        assert_eq!(all.simd(), Simd::Avx512);
        // Dropping AVX2 drops everything built on it; the tiles stay.
        let no_avx2 = all.without(Feature::Avx2);
        assert_eq!(no_avx2.simd(), Simd::Portable);
        assert!(!no_avx2.has(Feature::Avx512Vnni) && no_avx2.has(Feature::AmxBf16));
        let avx2 = all.only(&[Feature::Avx2]);
        assert_eq!((avx2.simd(), avx2.features().count()), (Simd::Avx2, 1));
        assert_eq!(format!("{:?}", Cpu::portable()), "Cpu(portable)");
    }

    /// Detection does not crash and agrees with std's and with the kernel's flags.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn detection_agrees_with_std_and_proc_cpuinfo() {
        use std::arch::is_x86_feature_detected as has;

        let cpu = Cpu::detected();
        let avx2 = has!("avx2") && has!("fma") && has!("f16c");
        assert_eq!(cpu.has(Feature::Avx2), avx2);
        assert_eq!(cpu.has(Feature::Avx512), avx2 && has!("avx512f"));
        assert_eq!(
            cpu.simd(),
            [Simd::Portable, Simd::Avx2, Simd::Avx512]
                [usize::from(avx2) + usize::from(avx2 && has!("avx512f"))]
        );
        let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
            return;
        };
        let Some(flags) = info.lines().find(|l| l.starts_with("flags")) else {
            return;
        };
        let flags: Vec<&str> = flags.split_whitespace().collect();
        for feature in [
            Feature::Avx512Bf16,
            Feature::AmxTile,
            Feature::AmxBf16,
            Feature::AmxInt8,
        ] {
            // The kernel lists these flags when the CPU has them and it supports them.
            let listed = flags.contains(&feature.name());
            assert_eq!(cpu.has(feature), listed, "{feature:?} ({cpu:?})");
        }
        if cpu.has(Feature::Avx2) {
            for flag in ["avx2", "fma", "f16c"] {
                assert!(flags.contains(&flag), "{flag}");
            }
        }
    }
}
