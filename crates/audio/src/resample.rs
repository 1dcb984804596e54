//! Sample-rate conversion with rubato's windowed-sinc resampler.
//!
//! Choice: [`rubato::SincFixedIn`] with a Blackman-Harris² windowed sinc of 256 taps at the
//! lower of the two rates (768 input taps for 48 kHz → 16 kHz), 256× oversampling and linear
//! interpolation between the oversampled taps (rubato's recommended high-quality setting),
//! run over the whole signal in fixed chunks. The cutoff is rubato's fitted value for that
//! length (≈ 0.947 of the lower Nyquist), which ends the transition band near Nyquist: little
//! aliasing, like the soxr "HQ" resampler behind `librosa.load(path, sr=16000)` that the
//! Qwen2-Audio reference scripts use. (`scipy.signal.resample_poly`, which made the test
//! fixtures, puts its −6 dB point at Nyquist instead; the difference shows in the top mel bin,
//! 7.6–8 kHz.)
//!
//! The resampler's offset is removed, so output sample `k` is the input at time
//! `k · from_hz / to_hz` (to 1/256 of an input sample), and the output has exactly
//! `ceil(len · to_hz / from_hz)` samples, the length librosa and `resample_poly` give (so
//! valid-frame counts match the reference).

use rubato::{
    Resampler, SincFixedIn, SincInterpolationParameters, SincInterpolationType, WindowFunction,
};

use crate::error::AudioError;

/// Taps of the sinc filter (at the lower of the two rates).
const SINC_LEN: usize = 256;
/// Input frames per call into rubato.
const CHUNK: usize = 4096;

/// Sample rates [`resample`] accepts, in Hz. Outside them the filter (its taps grow with
/// `from_hz / to_hz`) or the output (`to_hz / from_hz` samples per input sample) would take
/// memory out of proportion to the input; no real recording lies outside.
pub const RATE_RANGE_HZ: std::ops::RangeInclusive<u32> = 1_000..=768_000;

/// Resamples mono `samples` from `from_hz` to `to_hz`.
///
/// Returns a copy when the rates are equal. The output has `ceil(len · to_hz / from_hz)`
/// samples and is time-aligned with the input (no leading delay). Errors when a rate lies
/// outside [`RATE_RANGE_HZ`].
pub fn resample(samples: &[f32], from_hz: u32, to_hz: u32) -> Result<Vec<f32>, AudioError> {
    for (field, hz) in [("from_hz", from_hz), ("to_hz", to_hz)] {
        if !RATE_RANGE_HZ.contains(&hz) {
            return Err(AudioError::InvalidConfig {
                field: field.to_string(),
                value: hz.to_string(),
                reason: format!(
                    "sample rate must lie in {}..={} Hz",
                    RATE_RANGE_HZ.start(),
                    RATE_RANGE_HZ.end()
                ),
            });
        }
    }
    if from_hz == to_hz {
        return Ok(samples.to_vec());
    }
    let out_len = output_len(samples.len(), from_hz, to_hz);
    if out_len == 0 {
        return Ok(Vec::new());
    }
    let fail = |source: Box<dyn std::error::Error + Send + Sync>| AudioError::Resample {
        from_hz,
        to_hz,
        source,
    };

    let ratio = f64::from(to_hz) / f64::from(from_hz);
    // rubato's filter taps are counted at the input rate; when downsampling, stretch the
    // filter so it keeps SINC_LEN taps at the output rate (the same transition band for
    // every ratio), and take rubato's fitted cutoff for that length.
    let stretch = from_hz.div_ceil(to_hz).max(1) as usize;
    let params = SincInterpolationParameters {
        sinc_len: SINC_LEN * stretch,
        f_cutoff: rubato::calculate_cutoff(SINC_LEN, WindowFunction::BlackmanHarris2),
        interpolation: SincInterpolationType::Linear,
        oversampling_factor: 256,
        window: WindowFunction::BlackmanHarris2,
    };
    let mut resampler =
        SincFixedIn::<f32>::new(ratio, 1.0, params, CHUNK, 1).map_err(|e| fail(Box::new(e)))?;
    let (lead, delay) = alignment(from_hz, to_hz);
    let wanted = out_len + delay;

    let mut out = Vec::with_capacity(wanted + resampler.output_frames_max());
    let mut wave_out = resampler.output_buffer_allocate(true);
    let mut chunk = vec![0.0f32; CHUNK];
    // Position in the input, counting `lead` leading zeros.
    let mut pos = 0usize;
    // Every call consumes CHUNK frames and yields about CHUNK · ratio; the bound only guards
    // against a resampler that stops producing output.
    let max_calls = (wanted as f64 / (CHUNK as f64 * ratio)).ceil() as usize + 4;
    for _ in 0..max_calls {
        if out.len() >= wanted {
            break;
        }
        chunk.fill(0.0);
        for (i, dst) in chunk.iter_mut().enumerate() {
            if let Some(&s) = (pos + i).checked_sub(lead).and_then(|j| samples.get(j)) {
                *dst = s;
            }
        }
        pos += CHUNK;
        let (_, written) = resampler
            .process_into_buffer(&[chunk.as_slice()], &mut wave_out, None)
            .map_err(|e| fail(Box::new(e)))?;
        out.extend_from_slice(&wave_out[0][..written]);
    }
    if out.len() < wanted {
        return Err(fail(
            format!("resampler produced {} of {wanted} samples", out.len()).into(),
        ));
    }
    out.drain(..delay);
    out.truncate(out_len);
    Ok(out)
}

/// Leading zeros to feed and leading outputs to drop so that output `k` is the input at
/// `k · from / to`.
///
/// `SincFixedIn` (rubato 0.16, sinc length `S`, oversampling `O`) puts its `n`-th output at
/// input time `(n + 1) · from/to − 1 + 1/O` (the first output index starts at `−S/2`, and its
/// filter's centre tap sits at `S/2 − 1 + 1/O`). With `from/to = a/b` in lowest terms,
/// prepending `a − 1` zeros and dropping the first `b − 1` outputs moves output `n + b − 1`
/// to input time `n · a/b + 1/O`: aligned to 1/256 of an input sample. `output_delay()` is
/// not used: it reports half the filter length, which this resampler does not add.
fn alignment(from_hz: u32, to_hz: u32) -> (usize, usize) {
    let g = gcd(from_hz, to_hz);
    ((from_hz / g) as usize - 1, (to_hz / g) as usize - 1)
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// `ceil(len · to / from)`, in integers: the length `librosa.resample` and
/// `scipy.signal.resample_poly` return.
fn output_len(len: usize, from_hz: u32, to_hz: u32) -> usize {
    (len as u128 * u128::from(to_hz)).div_ceil(u128::from(from_hz)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaussian(len: usize, centre: f64, sigma: f64) -> Vec<f32> {
        (0..len)
            .map(|i| (-((i as f64 - centre) / sigma).powi(2) / 2.0).exp() as f32)
            .collect()
    }

    fn centroid(x: &[f32]) -> f64 {
        let (mut num, mut den) = (0.0, 0.0);
        for (i, &v) in x.iter().enumerate() {
            num += i as f64 * f64::from(v);
            den += f64::from(v);
        }
        num / den
    }

    #[test]
    fn identity_when_rates_equal() {
        let x = vec![0.1, -0.2, 0.3];
        assert_eq!(resample(&x, 16_000, 16_000).unwrap(), x);
    }

    #[test]
    fn zero_rate_is_an_error() {
        match resample(&[0.0; 10], 0, 16_000) {
            Err(AudioError::InvalidConfig { field, .. }) => assert_eq!(field, "from_hz"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn absurd_rates_are_errors_before_allocation() {
        // A header claiming 4 GHz would need a filter of 2^34 taps; 1 Hz, 16000 outputs per
        // input sample.
        for from in [1, 999, 768_001, u32::MAX] {
            match resample(&[0.0; 10], from, 16_000) {
                Err(AudioError::InvalidConfig { field, .. }) => assert_eq!(field, "from_hz"),
                other => panic!("{from}: {other:?}"),
            }
        }
    }

    #[test]
    fn output_length_is_ceil_of_ratio() {
        assert_eq!(output_len(48_000, 48_000, 16_000), 16_000);
        assert_eq!(output_len(44_101, 44_100, 16_000), 16_001);
        assert_eq!(output_len(68_545, 48_000, 16_000), 22_849);
        assert_eq!(output_len(3, 8_000, 16_000), 6);
        for (len, from) in [
            (1usize, 48_000u32),
            (1000, 44_100),
            (12_345, 22_050),
            (777, 8_000),
        ] {
            let y = resample(&vec![0.0; len], from, 16_000).unwrap();
            assert_eq!(y.len(), output_len(len, from, 16_000), "{len} @ {from}");
        }
    }

    #[test]
    fn output_is_time_aligned() {
        for from in [48_000u32, 44_100, 22_050, 8_000, 32_000] {
            let len = from as usize; // 1 s
            let centre = len as f64 * 0.4;
            let sigma = from as f64 / 1000.0; // 1 ms: well inside the passband
            let x = gaussian(len, centre, sigma);
            let y = resample(&x, from, 16_000).unwrap();
            let expected = centre * 16_000.0 / from as f64;
            let got = centroid(&y);
            assert!(
                (got - expected).abs() < 0.01,
                "{from} Hz: centroid {got}, expected {expected}"
            );
        }
    }

    #[test]
    fn sine_amplitude_is_preserved() {
        let from = 44_100u32;
        let x: Vec<f32> = (0..from as usize)
            .map(|i| (2.0 * std::f64::consts::PI * 1000.0 * i as f64 / from as f64).sin() as f32)
            .collect();
        let y = resample(&x, from, 16_000).unwrap();
        let mid = &y[2000..14_000];
        let max_err = mid
            .iter()
            .enumerate()
            .map(|(k, &v)| {
                let t = (k + 2000) as f64 / 16_000.0;
                (f64::from(v) - (2.0 * std::f64::consts::PI * 1000.0 * t).sin()).abs()
            })
            .fold(0.0, f64::max);
        assert!(max_err < 1e-3, "max error {max_err}");
    }
}
