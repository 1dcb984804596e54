//! Whisper log-mel spectrogram, as `WhisperFeatureExtractor` computes it.
//!
//! Mirrors `transformers/models/whisper/feature_extraction_whisper.py` and
//! `transformers/audio_utils.py::mel_filter_bank` (Slaney scale and norm). Computed
//! in `f64` (like the reference's numpy path), stored as `f32`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};
use serde::Deserialize;

use crate::error::AudioError;
use crate::{CHUNK_SAMPLES, HOP_LENGTH, N_FFT, SAMPLE_RATE};

/// Floor applied to mel energies before `log10`.
const LOG_FLOOR: f64 = 1e-10;
/// Dynamic range kept below the maximum, in `log10` units (80 dB).
const DYNAMIC_RANGE: f64 = 8.0;

/// Parameters of the log-mel front-end (the subset of `preprocessor_config.json` it uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MelConfig {
    /// Number of mel bins (`feature_size`): 128 for Qwen2-Audio / Whisper large-v3, 80 for
    /// older Whisper.
    pub n_mels: usize,
    /// FFT size and window length (`n_fft`).
    pub n_fft: usize,
    /// Hop between frames in samples (`hop_length`).
    pub hop_length: usize,
    /// Sample rate the features expect (`sampling_rate`); must be 16 kHz.
    pub sampling_rate: u32,
    /// Samples per window after padding/truncation (`n_samples` = `chunk_length · sampling_rate`).
    pub n_samples: usize,
}

/// `preprocessor_config.json` as stored; absent fields take `WhisperFeatureExtractor`'s
/// defaults.
#[derive(Debug, Deserialize)]
struct PreprocessorConfig {
    feature_extractor_type: Option<String>,
    feature_size: Option<usize>,
    hop_length: Option<usize>,
    n_fft: Option<usize>,
    sampling_rate: Option<u32>,
    chunk_length: Option<usize>,
    n_samples: Option<usize>,
    nb_max_frames: Option<usize>,
    padding_value: Option<f64>,
    dither: Option<f64>,
}

fn invalid(field: &str, value: impl ToString, reason: impl Into<String>) -> AudioError {
    AudioError::InvalidConfig {
        field: field.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

impl MelConfig {
    /// Whisper's parameters (16 kHz, `n_fft` 400, hop 160, 30 s windows) with `n_mels` bins.
    pub fn whisper(n_mels: usize) -> Self {
        Self {
            n_mels,
            n_fft: N_FFT,
            hop_length: HOP_LENGTH,
            sampling_rate: SAMPLE_RATE,
            n_samples: CHUNK_SAMPLES,
        }
    }

    /// Reads and validates a hub `preprocessor_config.json`.
    ///
    /// Absent fields default to `WhisperFeatureExtractor`'s values (`feature_size` 80,
    /// `hop_length` 160, `n_fft` 400, `sampling_rate` 16000, `chunk_length` 30). Fields we do not
    /// implement must have their neutral value (`dither` 0, `padding_value` 0).
    pub fn from_preprocessor_json(path: &Path) -> Result<Self, AudioError> {
        let text = std::fs::read_to_string(path).map_err(|source| AudioError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let raw: PreprocessorConfig =
            serde_json::from_str(&text).map_err(|source| AudioError::ConfigParse {
                path: path.to_path_buf(),
                source,
            })?;
        Self::from_raw(raw)
    }

    /// Reads the feature extractor nested under `"feature_extractor"` in a transformers 5.x
    /// `processor_config.json` (same fields and defaults as [`Self::from_preprocessor_json`]).
    pub fn from_processor_json(path: &Path) -> Result<Self, AudioError> {
        #[derive(serde::Deserialize)]
        struct Processor {
            feature_extractor: Option<PreprocessorConfig>,
        }
        let text = std::fs::read_to_string(path).map_err(|source| AudioError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let raw: Processor =
            serde_json::from_str(&text).map_err(|source| AudioError::ConfigParse {
                path: path.to_path_buf(),
                source,
            })?;
        match raw.feature_extractor {
            Some(fe) => Self::from_raw(fe),
            None => Err(invalid(
                "feature_extractor",
                "absent",
                "processor_config.json has no feature_extractor",
            )),
        }
    }

    fn from_raw(raw: PreprocessorConfig) -> Result<Self, AudioError> {
        if let Some(kind) = raw.feature_extractor_type {
            if kind != "WhisperFeatureExtractor" {
                return Err(invalid(
                    "feature_extractor_type",
                    kind,
                    "only WhisperFeatureExtractor is supported",
                ));
            }
        }
        if let Some(v) = raw.padding_value.filter(|&v| v != 0.0) {
            return Err(invalid("padding_value", v, "only 0.0 is supported"));
        }
        if let Some(v) = raw.dither.filter(|&v| v != 0.0) {
            return Err(invalid(
                "dither",
                v,
                "dithering is not implemented; must be 0.0",
            ));
        }
        let sampling_rate = raw.sampling_rate.unwrap_or(SAMPLE_RATE);
        let hop_length = raw.hop_length.unwrap_or(HOP_LENGTH);
        let chunk_length = raw
            .chunk_length
            .unwrap_or(CHUNK_SAMPLES / SAMPLE_RATE as usize);
        let from_chunk = chunk_length.saturating_mul(sampling_rate as usize);
        // The reference derives n_samples from chunk_length; a stored n_samples must agree.
        let n_samples = match raw.n_samples {
            Some(n) if raw.chunk_length.is_some() && n != from_chunk => {
                return Err(invalid(
                    "n_samples",
                    n,
                    format!("must equal chunk_length * sampling_rate = {from_chunk}"),
                ))
            }
            Some(n) => n,
            None => from_chunk,
        };
        let cfg = Self {
            n_mels: raw.feature_size.unwrap_or(80),
            n_fft: raw.n_fft.unwrap_or(N_FFT),
            hop_length,
            sampling_rate,
            n_samples,
        };
        cfg.validate()?;
        if let Some(n) = raw.nb_max_frames {
            if n != cfg.n_frames() {
                return Err(invalid(
                    "nb_max_frames",
                    n,
                    format!("must equal n_samples / hop_length = {}", cfg.n_frames()),
                ));
            }
        }
        Ok(cfg)
    }

    /// Checks that the parameters describe a front-end this crate computes; errors name the
    /// `preprocessor_config.json` field.
    pub fn validate(&self) -> Result<(), AudioError> {
        if self.sampling_rate != SAMPLE_RATE {
            return Err(invalid(
                "sampling_rate",
                self.sampling_rate,
                format!("audio is resampled to {SAMPLE_RATE} Hz; the features must expect it"),
            ));
        }
        if self.n_fft < 2 {
            return Err(invalid("n_fft", self.n_fft, "must be at least 2"));
        }
        if self.hop_length == 0 {
            return Err(invalid("hop_length", self.hop_length, "must be positive"));
        }
        let n_freqs = self.n_fft / 2 + 1;
        if self.n_mels == 0 || self.n_mels > n_freqs {
            return Err(invalid(
                "feature_size",
                self.n_mels,
                format!("must be between 1 and n_fft / 2 + 1 = {n_freqs}"),
            ));
        }
        if self.n_samples < self.n_fft {
            return Err(invalid(
                "n_samples",
                self.n_samples,
                format!("must be at least n_fft = {}", self.n_fft),
            ));
        }
        Ok(())
    }

    /// Frames per window: `n_samples / hop_length` (3000 for Whisper).
    pub fn n_frames(&self) -> usize {
        self.n_samples / self.hop_length
    }

    /// Valid (non-padding) frames of a window holding `len` samples:
    /// `ceil(min(len, n_samples) / hop_length)`.
    pub fn valid_frames(&self, len: usize) -> usize {
        len.min(self.n_samples).div_ceil(self.hop_length)
    }
}

/// Log-mel features of one window.
#[derive(Debug, Clone, PartialEq)]
pub struct LogMel {
    /// Number of mel bins (rows).
    pub n_mels: usize,
    /// Number of frames (columns), always the config's full window (3000 for Whisper).
    pub n_frames: usize,
    /// Row-major `(n_mels, n_frames)` values, as `input_features` of the reference.
    pub data: Vec<f32>,
    /// Frames that carry audio; the rest is padding (the encoder's attention mask length).
    pub valid_frames: usize,
}

impl LogMel {
    /// The `n_frames` values of mel bin `mel`, or `None` if out of range.
    pub fn row(&self, mel: usize) -> Option<&[f32]> {
        self.data
            .get(mel * self.n_frames..(mel + 1) * self.n_frames)
    }
}

/// One triangular mel filter: weights for FFT bins `start..start + weights.len()`.
#[derive(Debug, Clone)]
struct MelFilter {
    start: usize,
    weights: Vec<f64>,
}

/// Computes Whisper log-mel features; build once, reuse for every window.
pub struct MelExtractor {
    cfg: MelConfig,
    filters: Vec<MelFilter>,
    window: Vec<f64>,
    fft: Arc<dyn RealToComplex<f64>>,
}

impl std::fmt::Debug for MelExtractor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MelExtractor")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl MelExtractor {
    /// Validates `cfg` and precomputes the Slaney filterbank, the Hann window and the FFT plan.
    pub fn new(cfg: MelConfig) -> Result<Self, AudioError> {
        cfg.validate()?;
        let n_freqs = cfg.n_fft / 2 + 1;
        let dense = mel_filter_bank(
            n_freqs,
            cfg.n_mels,
            0.0,
            f64::from(cfg.sampling_rate / 2),
            cfg.sampling_rate,
        );
        let filters = (0..cfg.n_mels)
            .map(|m| {
                let col = |k: usize| dense[k * cfg.n_mels + m];
                let first = (0..n_freqs).find(|&k| col(k) != 0.0).unwrap_or(0);
                let last = (0..n_freqs).rev().find(|&k| col(k) != 0.0).unwrap_or(0);
                MelFilter {
                    start: first,
                    weights: (first..=last.max(first)).map(col).collect(),
                }
            })
            .collect();
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(cfg.n_fft);
        Ok(Self {
            window: hann_periodic(cfg.n_fft),
            filters,
            fft,
            cfg,
        })
    }

    /// The configuration the extractor was built with.
    pub fn config(&self) -> &MelConfig {
        &self.cfg
    }

    /// Features of one window: the first `n_samples` samples (30 s at 16 kHz; the rest is
    /// ignored, as the reference truncates), right-padded with zeros.
    pub fn window(&self, samples: &[f32]) -> Result<LogMel, AudioError> {
        check_samples(samples)?;
        self.compute(&samples[..samples.len().min(self.cfg.n_samples)])
    }

    /// Features of consecutive `n_samples` windows covering all of `samples`; the last one
    /// is padded. A length that is an exact multiple gives no extra empty window.
    pub fn windows(&self, samples: &[f32]) -> Result<Vec<LogMel>, AudioError> {
        check_samples(samples)?;
        samples
            .chunks(self.cfg.n_samples)
            .map(|chunk| self.compute(chunk))
            .collect()
    }

    /// `samples.len() <= n_samples`, finite, non-empty.
    fn compute(&self, samples: &[f32]) -> Result<LogMel, AudioError> {
        let cfg = &self.cfg;
        let (n_fft, hop, n_mels, n_frames) =
            (cfg.n_fft, cfg.hop_length, cfg.n_mels, cfg.n_frames());
        let pad = n_fft / 2;

        // Zero-pad to n_samples, then centre with reflect padding (torch.stft center=True).
        let n = cfg.n_samples;
        let mut padded = vec![0.0f64; n + 2 * pad];
        for (dst, &s) in padded[pad..].iter_mut().zip(samples) {
            *dst = f64::from(s);
        }
        for j in 1..=pad {
            padded[pad - j] = padded[pad + j];
            padded[pad + n - 1 + j] = padded[pad + n - 1 - j];
        }

        let fft_err = |e: realfft::FftError| invalid("n_fft", n_fft, format!("FFT failed: {e}"));
        let mut frame = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = vec![0.0f64; spectrum.len()];
        let mut log_spec = vec![LOG_FLOOR.log10(); n_mels * n_frames];
        let mut max = f64::NEG_INFINITY;
        for t in 0..n_frames {
            let src = &padded[t * hop..t * hop + n_fft];
            if src.iter().all(|&v| v == 0.0) {
                // Pure padding: zero power, so every bin sits at the log floor already.
                max = max.max(LOG_FLOOR.log10());
                continue;
            }
            for ((dst, &s), &w) in frame.iter_mut().zip(src).zip(&self.window) {
                *dst = s * w;
            }
            self.fft
                .process_with_scratch(&mut frame, &mut spectrum, &mut scratch)
                .map_err(fft_err)?;
            for (p, c) in power.iter_mut().zip(&spectrum) {
                *p = c.re * c.re + c.im * c.im;
            }
            for (m, filter) in self.filters.iter().enumerate() {
                let energy: f64 = filter
                    .weights
                    .iter()
                    .zip(&power[filter.start..])
                    .map(|(w, p)| w * p)
                    .sum();
                let v = energy.max(LOG_FLOOR).log10();
                max = max.max(v);
                log_spec[m * n_frames + t] = v;
            }
        }

        let floor = max - DYNAMIC_RANGE;
        let data = log_spec
            .iter()
            .map(|&v| ((v.max(floor) + 4.0) / 4.0) as f32)
            .collect();
        Ok(LogMel {
            n_mels,
            n_frames,
            data,
            valid_frames: cfg.valid_frames(samples.len()),
        })
    }
}

fn check_samples(samples: &[f32]) -> Result<(), AudioError> {
    let path = || PathBuf::from("<samples>");
    if samples.is_empty() {
        return Err(AudioError::Empty { path: path() });
    }
    if let Some((index, &value)) = samples.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(AudioError::NonFinite {
            path: path(),
            index,
            value,
        });
    }
    Ok(())
}

/// Periodic Hann window, `0.5 - 0.5 cos(2πn / len)` (`torch.hann_window(len)`).
fn hann_periodic(len: usize) -> Vec<f64> {
    (0..len)
        .map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / len as f64).cos())
        .collect()
}

const MIN_LOG_HERTZ: f64 = 1000.0;
const MIN_LOG_MEL: f64 = 15.0;

/// Slaney mel scale: linear below 1 kHz, logarithmic above.
fn hertz_to_mel(freq: f64) -> f64 {
    if freq >= MIN_LOG_HERTZ {
        MIN_LOG_MEL + (freq / MIN_LOG_HERTZ).ln() * (27.0 / 6.4f64.ln())
    } else {
        3.0 * freq / 200.0
    }
}

fn mel_to_hertz(mel: f64) -> f64 {
    if mel >= MIN_LOG_MEL {
        MIN_LOG_HERTZ * ((6.4f64.ln() / 27.0) * (mel - MIN_LOG_MEL)).exp()
    } else {
        200.0 * mel / 3.0
    }
}

/// `numpy.linspace(start, stop, n)` (endpoint included, last value exact).
fn linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (stop - start) / (n - 1) as f64;
            let mut v: Vec<f64> = (0..n).map(|i| start + i as f64 * step).collect();
            v[n - 1] = stop;
            v
        }
    }
}

/// `mel_filter_bank(n_freqs, n_mels, min_hz, max_hz, sampling_rate, norm="slaney",
/// mel_scale="slaney")`: row-major `(n_freqs, n_mels)`, triangles built in Hz space.
pub(crate) fn mel_filter_bank(
    n_freqs: usize,
    n_mels: usize,
    min_hz: f64,
    max_hz: f64,
    sampling_rate: u32,
) -> Vec<f64> {
    let mels = linspace(hertz_to_mel(min_hz), hertz_to_mel(max_hz), n_mels + 2);
    let filter_freqs: Vec<f64> = mels.into_iter().map(mel_to_hertz).collect();
    let fft_freqs = linspace(0.0, f64::from(sampling_rate / 2), n_freqs);
    let mut bank = vec![0.0; n_freqs * n_mels];
    for (k, &f) in fft_freqs.iter().enumerate() {
        for m in 0..n_mels {
            let (lo, centre, hi) = (filter_freqs[m], filter_freqs[m + 1], filter_freqs[m + 2]);
            let down = (f - lo) / (centre - lo);
            let up = (hi - f) / (hi - centre);
            let enorm = 2.0 / (hi - lo);
            bank[k * n_mels + m] = down.min(up).max(0.0) * enorm;
        }
    }
    bank
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slaney_scale_round_trips_and_is_continuous() {
        for f in [0.0, 40.0, 999.0, 1000.0, 1001.0, 4000.0, 8000.0] {
            assert!((mel_to_hertz(hertz_to_mel(f)) - f).abs() < 1e-9, "{f}");
        }
        assert!((hertz_to_mel(1000.0) - 15.0).abs() < 1e-12);
        assert!((hertz_to_mel(999.999_999) - 15.0).abs() < 1e-6);
    }

    #[test]
    fn filterbank_shape_and_properties() {
        for n_mels in [128usize, 80] {
            let bank = mel_filter_bank(201, n_mels, 0.0, 8000.0, 16_000);
            assert_eq!(bank.len(), 201 * n_mels);
            assert!(bank.iter().all(|&w| w >= 0.0 && w.is_finite()));
            let mels = linspace(hertz_to_mel(0.0), hertz_to_mel(8000.0), n_mels + 2);
            let freqs: Vec<f64> = mels.iter().map(|&m| mel_to_hertz(m)).collect();
            for m in 0..n_mels {
                let col: Vec<f64> = (0..201).map(|k| bank[k * n_mels + m]).collect();
                // Every filter is non-empty, zero outside (f[m], f[m+2]) and unimodal.
                assert!(col.iter().any(|&w| w > 0.0), "filter {m} is empty");
                for (k, &w) in col.iter().enumerate() {
                    let f = k as f64 * 40.0;
                    if f <= freqs[m] || f >= freqs[m + 2] {
                        assert_eq!(w, 0.0, "filter {m} bin {k}");
                    }
                }
                let peak = (0..201).max_by(|&a, &b| col[a].total_cmp(&col[b])).unwrap();
                assert!(col[..=peak].windows(2).all(|p| p[0] <= p[1]));
                assert!(col[peak..].windows(2).all(|p| p[0] >= p[1]));
                // Slaney normalisation: peak height 2 / (f[m+2] - f[m]) times a triangle
                // value <= 1.
                assert!(col[peak] <= 2.0 / (freqs[m + 2] - freqs[m]) + 1e-15);
                // The area of the continuous triangle is 1 per Hz, so the sampled sum times
                // the 40 Hz bin spacing is close to 1 where filters are wider than a bin.
                if freqs[m + 2] - freqs[m] > 400.0 {
                    let area: f64 = col.iter().sum::<f64>() * 40.0;
                    assert!((area - 1.0).abs() < 0.02, "filter {m} area {area}");
                }
            }
        }
    }

    #[test]
    fn filterbank_known_values() {
        // First filter of the 128-bin bank: f = [0, 23.3.., 46.7..] Hz; only bin 1 (40 Hz)
        // lies inside, on the falling edge.
        let bank = mel_filter_bank(201, 128, 0.0, 8000.0, 16_000);
        let mel_max = hertz_to_mel(8000.0);
        let step = mel_max / 129.0;
        let (f1, f2) = (mel_to_hertz(step), mel_to_hertz(2.0 * step));
        let expected = (f2 - 40.0) / (f2 - f1) * 2.0 / f2;
        assert!((bank[128] - expected).abs() < 1e-15);
        assert_eq!(bank[0], 0.0);
    }

    #[test]
    fn hann_is_periodic() {
        let w = hann_periodic(400);
        assert_eq!(w[0], 0.0);
        assert!((w[200] - 1.0).abs() < 1e-15);
        assert!((w[100] - 0.5).abs() < 1e-12);
        assert!((w[1] - w[399]).abs() < 1e-15);
    }

    /// The `field` of an `InvalidConfig` error, or a description of what came instead.
    fn invalid_field<T: std::fmt::Debug>(r: Result<T, AudioError>) -> String {
        match r {
            Err(AudioError::InvalidConfig { field, .. }) => field,
            other => format!("not InvalidConfig: {other:?}"),
        }
    }

    #[test]
    fn config_validation_names_the_field() {
        let mut cfg = MelConfig::whisper(128);
        assert!(cfg.validate().is_ok());
        assert_eq!(cfg.n_frames(), 3000);
        cfg.sampling_rate = 44_100;
        assert_eq!(invalid_field(cfg.validate()), "sampling_rate");
        assert_eq!(
            invalid_field(MelExtractor::new(MelConfig::whisper(0))),
            "feature_size"
        );
        let mut cfg = MelConfig::whisper(80);
        cfg.hop_length = 0;
        assert_eq!(invalid_field(cfg.validate()), "hop_length");
    }

    fn parse(json: &str) -> Result<MelConfig, AudioError> {
        MelConfig::from_raw(serde_json::from_str(json).unwrap())
    }

    #[test]
    fn preprocessor_json() {
        let qwen = r#"{"chunk_length": 30, "feature_extractor_type": "WhisperFeatureExtractor",
            "feature_size": 128, "hop_length": 160, "n_fft": 400, "n_samples": 480000,
            "nb_max_frames": 3000, "padding_side": "right", "padding_value": 0.0,
            "processor_class": "Qwen2AudioProcessor", "return_attention_mask": true,
            "sampling_rate": 16000}"#;
        assert_eq!(parse(qwen).unwrap(), MelConfig::whisper(128));
        assert_eq!(parse("{}").unwrap(), MelConfig::whisper(80));
        let bad = [
            (r#"{"sampling_rate": 22050}"#, "sampling_rate"),
            (r#"{"feature_size": 0}"#, "feature_size"),
            (r#"{"dither": 1.0}"#, "dither"),
            (r#"{"nb_max_frames": 1500}"#, "nb_max_frames"),
            (r#"{"chunk_length": 30, "n_samples": 160000}"#, "n_samples"),
            (
                r#"{"feature_extractor_type": "ClapFeatureExtractor"}"#,
                "feature_extractor_type",
            ),
        ];
        for (json, field) in bad {
            assert_eq!(invalid_field(parse(json)), field, "{json}");
        }
    }

    #[test]
    fn silence_is_constant_and_windows_split() {
        let ex = MelExtractor::new(MelConfig::whisper(80)).unwrap();
        let mel = ex.window(&[0.0; 16_000]).unwrap();
        assert_eq!(
            (mel.n_mels, mel.n_frames, mel.valid_frames),
            (80, 3000, 100)
        );
        // All energies floor at 1e-10: log -10, max -10, (−10 + 4) / 4.
        assert!(mel.data.iter().all(|&v| v == -1.5));

        let ex = MelExtractor::new(MelConfig::whisper(128)).unwrap();
        let tone: Vec<f32> = (0..42 * 16_000)
            .map(|i| (i as f32 * 0.05).sin() * 0.1)
            .collect();
        let w = ex.windows(&tone).unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!((w[0].valid_frames, w[1].valid_frames), (3000, 1200));
        assert!(w.iter().all(|m| m.data.len() == 128 * 3000));
        let sixty = vec![0.01f32; 60 * 16_000];
        let w = ex.windows(&sixty).unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!((w[0].valid_frames, w[1].valid_frames), (3000, 3000));
        // window() truncates like the reference.
        assert_eq!(ex.window(&tone).unwrap(), ex.windows(&tone).unwrap()[0]);
    }

    #[test]
    fn padding_frames_sit_at_the_floor() {
        let ex = MelExtractor::new(MelConfig::whisper(128)).unwrap();
        let x: Vec<f32> = (0..8000).map(|i| (i as f32 * 0.3).sin() * 0.5).collect();
        let mel = ex.window(&x).unwrap();
        let max = mel.data.iter().cloned().fold(f32::MIN, f32::max);
        let last = mel.row(5).unwrap()[2999];
        assert!((last - (max - 2.0)).abs() < 1e-6, "{last} vs {max}");
        assert!(mel.row(128).is_none());
    }

    #[test]
    fn bad_samples_are_errors() {
        let ex = MelExtractor::new(MelConfig::whisper(80)).unwrap();
        assert!(matches!(ex.window(&[]), Err(AudioError::Empty { .. })));
        assert!(matches!(
            ex.windows(&[0.0, f32::NAN]),
            Err(AudioError::NonFinite { index: 1, .. })
        ));
    }
}
