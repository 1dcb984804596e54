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
/// outside [`RATE_RANGE_HZ`]. The same as feeding `samples` to a [`StreamResampler`] in any
/// pieces.
pub fn resample(samples: &[f32], from_hz: u32, to_hz: u32) -> Result<Vec<f32>, AudioError> {
    let mut resampler = StreamResampler::new(from_hz, to_hz)?;
    let mut out = Vec::with_capacity(output_len(samples.len(), from_hz, to_hz));
    resampler.push(samples, &mut out)?;
    resampler.finish(&mut out)?;
    Ok(out)
}

/// [`resample`] for a signal that arrives in pieces: [`StreamResampler::push`] each piece,
/// then [`StreamResampler::finish`]. The output is the same, sample for sample, as
/// [`resample`] on the whole signal (the sinc filter sees the same fixed input chunks), and
/// memory stays bounded by one chunk and the filter, whatever the length.
pub struct StreamResampler {
    from_hz: u32,
    to_hz: u32,
    /// Input samples pushed so far (the leading zeros excluded).
    pushed: usize,
    /// Output samples handed out so far.
    emitted: usize,
    /// `None` when the rates are equal.
    sinc: Option<Sinc>,
}

/// The windowed-sinc state of a [`StreamResampler`].
struct Sinc {
    resampler: SincFixedIn<f32>,
    /// The next input chunk, filled up to `filled`.
    chunk: Vec<f32>,
    filled: usize,
    wave_out: Vec<Vec<f32>>,
    /// Leading outputs still to drop (the alignment delay).
    skip: usize,
    /// Outputs computed but not yet known to lie within the signal's length.
    pending: Vec<f32>,
    /// Outputs computed so far, the dropped ones included.
    produced: usize,
    delay: usize,
}

impl StreamResampler {
    /// A resampler from `from_hz` to `to_hz`; errors when a rate lies outside
    /// [`RATE_RANGE_HZ`].
    pub fn new(from_hz: u32, to_hz: u32) -> Result<Self, AudioError> {
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
        let mut this = Self {
            from_hz,
            to_hz,
            pushed: 0,
            emitted: 0,
            sinc: None,
        };
        if from_hz == to_hz {
            return Ok(this);
        }
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
        let resampler = SincFixedIn::<f32>::new(ratio, 1.0, params, CHUNK, 1)
            .map_err(|e| this.fail(Box::new(e)))?;
        let (lead, delay) = alignment(from_hz, to_hz);
        let wave_out = resampler.output_buffer_allocate(true);
        this.sinc = Some(Sinc {
            resampler,
            chunk: vec![0.0; CHUNK],
            filled: 0,
            wave_out,
            skip: delay,
            pending: Vec::new(),
            produced: 0,
            delay,
        });
        // The leading zeros that align the output; they count as no input.
        let zeros = [0.0f32; CHUNK];
        let mut left = lead;
        while left > 0 {
            let n = left.min(CHUNK);
            this.feed(&zeros[..n])?;
            left -= n;
        }
        Ok(this)
    }

    /// Resamples the next piece of the signal, appending to `out` every output sample that is
    /// final; the rest follows with later pieces or [`StreamResampler::finish`].
    pub fn push(&mut self, samples: &[f32], out: &mut Vec<f32>) -> Result<(), AudioError> {
        self.pushed += samples.len();
        if self.sinc.is_none() {
            out.extend_from_slice(samples);
            self.emitted += samples.len();
            return Ok(());
        }
        self.feed(samples)?;
        // The signal is at least this long, so outputs below its output length are in.
        self.emit(output_len(self.pushed, self.from_hz, self.to_hz), out);
        Ok(())
    }

    /// Ends the signal: pads it with zeros through the filter and appends the remaining
    /// output, so that `out` received `ceil(len · to_hz / from_hz)` samples in all.
    pub fn finish(mut self, out: &mut Vec<f32>) -> Result<(), AudioError> {
        let out_len = output_len(self.pushed, self.from_hz, self.to_hz);
        if let Some(delay) = self.sinc.as_ref().map(|s| s.delay) {
            let wanted = out_len + delay;
            let ratio = f64::from(self.to_hz) / f64::from(self.from_hz);
            // Every call consumes CHUNK frames and yields about CHUNK · ratio; the bound only
            // guards against a resampler that stops producing output.
            let max_calls = (wanted as f64 / (CHUNK as f64 * ratio)).ceil() as usize + 4;
            let zeros = [0.0f32; CHUNK];
            let mut calls = 0;
            while out_len > 0 && self.produced() < wanted {
                if calls == max_calls {
                    let produced = self.produced();
                    return Err(self.fail(
                        format!("resampler produced {produced} of {wanted} samples").into(),
                    ));
                }
                calls += 1;
                let room = CHUNK - self.sinc.as_ref().map_or(0, |s| s.filled);
                self.feed(&zeros[..room])?;
            }
        }
        self.emit(out_len, out);
        Ok(())
    }

    /// Outputs computed so far, the dropped ones included.
    fn produced(&self) -> usize {
        self.sinc.as_ref().map_or(0, |s| s.produced)
    }

    /// Feeds input through the fixed chunks, keeping the outputs in `pending`.
    fn feed(&mut self, mut samples: &[f32]) -> Result<(), AudioError> {
        let (from_hz, to_hz) = (self.from_hz, self.to_hz);
        let Some(sinc) = &mut self.sinc else {
            return Ok(());
        };
        while !samples.is_empty() {
            let n = (CHUNK - sinc.filled).min(samples.len());
            sinc.chunk[sinc.filled..sinc.filled + n].copy_from_slice(&samples[..n]);
            sinc.filled += n;
            samples = &samples[n..];
            if sinc.filled < CHUNK {
                break;
            }
            sinc.filled = 0;
            let (_, written) = sinc
                .resampler
                .process_into_buffer(&[sinc.chunk.as_slice()], &mut sinc.wave_out, None)
                .map_err(|e| AudioError::Resample {
                    from_hz,
                    to_hz,
                    source: Box::new(e),
                })?;
            sinc.produced += written;
            let drop = sinc.skip.min(written);
            sinc.skip -= drop;
            sinc.pending
                .extend_from_slice(&sinc.wave_out[0][drop..written]);
        }
        Ok(())
    }

    /// Moves pending outputs to `out` until `limit` outputs have been handed out in all.
    fn emit(&mut self, limit: usize, out: &mut Vec<f32>) {
        let Some(sinc) = &mut self.sinc else {
            return;
        };
        let n = limit.saturating_sub(self.emitted).min(sinc.pending.len());
        out.extend(sinc.pending.drain(..n));
        self.emitted += n;
    }

    fn fail(&self, source: Box<dyn std::error::Error + Send + Sync>) -> AudioError {
        AudioError::Resample {
            from_hz: self.from_hz,
            to_hz: self.to_hz,
            source,
        }
    }
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
pub(crate) fn output_len(len: usize, from_hz: u32, to_hz: u32) -> usize {
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

    /// A deterministic test signal: a chirp plus a little pseudo-random noise.
    fn signal(len: usize) -> Vec<f32> {
        let mut state = 0x2545_f491_u32;
        (0..len)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let t = i as f32 / 1000.0;
                (t * t * 40.0).sin() * 0.5 + (state as f32 / u32::MAX as f32 - 0.5) * 0.1
            })
            .collect()
    }

    #[test]
    fn streamed_output_equals_the_whole_signal_resampled() {
        // Piece sizes around the chunk (4096) and odd ones; lengths from empty to several
        // chunks, for down-, up- and same-rate conversion.
        for from in [48_000u32, 44_100, 22_050, 8_000, 16_000, 32_000] {
            for len in [0usize, 1, 333, 4096, 4097, 20_000] {
                let x = signal(len);
                let whole = resample(&x, from, 16_000).unwrap();
                for piece in [1usize, 17, 4095, 4096, 10_000] {
                    let mut r = StreamResampler::new(from, 16_000).unwrap();
                    let mut out = Vec::new();
                    for p in x.chunks(piece) {
                        r.push(p, &mut out).unwrap();
                    }
                    r.finish(&mut out).unwrap();
                    assert_eq!(
                        out.len(),
                        whole.len(),
                        "{from} Hz, {len} samples, pieces of {piece}"
                    );
                    // Bit for bit: the filter sees the same chunks whatever the pieces.
                    assert!(
                        out.iter()
                            .zip(&whole)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{from} Hz, {len} samples, pieces of {piece}"
                    );
                }
            }
        }
    }

    #[test]
    fn streamed_output_never_runs_ahead_of_the_input() {
        // After each piece, no more output than the input so far can give.
        let x = signal(30_000);
        let mut r = StreamResampler::new(44_100, 16_000).unwrap();
        let mut out = Vec::new();
        let mut pushed = 0;
        for p in x.chunks(3000) {
            r.push(p, &mut out).unwrap();
            pushed += p.len();
            assert!(out.len() <= output_len(pushed, 44_100, 16_000));
        }
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
