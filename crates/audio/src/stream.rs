//! Audio of any length in bounded memory: a file decoded packet by packet, resampled in
//! fixed chunks and handed out one 30 s window of 16 kHz samples at a time.
//!
//! [`scan`] decodes a file once without keeping its samples, for its length (the token count
//! of every window, known before any window is encoded); [`WindowReader`] then yields the
//! windows. The samples of a window are exactly those [`crate::load_audio_16k`] gives for the
//! same span: the decoder is the same and [`StreamResampler`] matches [`crate::resample`]
//! sample for sample.

use std::path::Path;

use crate::decode::PcmStream;
use crate::resample::{output_len, StreamResampler};
use crate::{check_length, check_rate, AudioError, SAMPLE_RATE};

/// What [`scan`] learns about a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioInfo {
    /// The file's sample rate in Hz.
    pub sample_rate: u32,
    /// The file's channel count (before averaging).
    pub channels: usize,
    /// Frames (samples per channel) at the file's rate.
    pub frames: u64,
    /// Samples after resampling to 16 kHz: `ceil(frames · 16000 / sample_rate)`.
    pub samples_16k: usize,
}

impl AudioInfo {
    /// Length in seconds.
    pub fn duration_s(&self) -> f64 {
        self.samples_16k as f64 / f64::from(SAMPLE_RATE)
    }
}

/// Decodes `path` to its end without keeping the samples: its rate, channels and length.
///
/// Fails as [`crate::load_audio_16k`] does on the same file (the same error variants, naming
/// `path`), so a file that scans is one whose windows [`WindowReader`] can read.
pub fn scan(path: &Path) -> Result<AudioInfo, AudioError> {
    scan_stream(PcmStream::open(path)?)
}

/// [`scan`] of an opened stream (a file, or audio held in memory through
/// [`PcmStream::from_bytes`]); errors name the stream's path.
pub fn scan_stream(mut pcm: PcmStream) -> Result<AudioInfo, AudioError> {
    let path = pcm.path().to_path_buf();
    let path = path.as_path();
    let mut scratch = Vec::new();
    loop {
        scratch.clear();
        if !pcm.next_packet(&mut scratch)? {
            break;
        }
    }
    let (sample_rate, channels) = pcm.layout().ok_or_else(|| AudioError::Empty {
        path: path.to_path_buf(),
    })?;
    check_rate(sample_rate, path)?;
    let frames = pcm.frames();
    let samples_16k = output_len(frames as usize, sample_rate, SAMPLE_RATE);
    check_length(samples_16k, path)?;
    Ok(AudioInfo {
        sample_rate,
        channels,
        frames,
        samples_16k,
    })
}

/// Lengths of the consecutive windows of `window` samples covering `total` samples (the last
/// one shorter unless `total` is a multiple; no empty window), as
/// [`crate::MelExtractor::windows`] cuts them.
pub fn window_lengths(total: usize, window: usize) -> impl Iterator<Item = usize> {
    let window = window.max(1);
    (0..total.div_ceil(window)).map(move |w| (total - w * window).min(window))
}

/// A file read one window of 16 kHz samples at a time.
pub struct WindowReader {
    pcm: PcmStream,
    resampler: Option<StreamResampler>,
    window: usize,
    /// Resampled samples not handed out yet (less than a window and one packet).
    pending: Vec<f32>,
    scratch: Vec<f32>,
    done: bool,
}

impl WindowReader {
    /// Opens `path` for windows of `window` samples at 16 kHz (480 000 for Whisper's 30 s).
    pub fn open(path: &Path, window: usize) -> Result<Self, AudioError> {
        Ok(Self::from_stream(PcmStream::open(path)?, window))
    }

    /// Reads windows of `window` samples from an opened stream (see [`WindowReader::open`]).
    pub fn from_stream(pcm: PcmStream, window: usize) -> Self {
        Self {
            pcm,
            resampler: None,
            window: window.max(1),
            pending: Vec::new(),
            scratch: Vec::new(),
            done: false,
        }
    }

    /// The next window's samples: `window` of them, fewer for the last; `None` after it.
    pub fn next_window(&mut self) -> Result<Option<Vec<f32>>, AudioError> {
        loop {
            if self.pending.len() >= self.window {
                let rest = self.pending.split_off(self.window);
                return Ok(Some(std::mem::replace(&mut self.pending, rest)));
            }
            if self.done {
                let last = std::mem::take(&mut self.pending);
                return Ok((!last.is_empty()).then_some(last));
            }
            self.scratch.clear();
            let more = self.pcm.next_packet(&mut self.scratch)?;
            if self.resampler.is_none() {
                if let Some((rate, _)) = self.pcm.layout() {
                    check_rate(rate, self.pcm.path())?;
                    self.resampler = Some(StreamResampler::new(rate, SAMPLE_RATE)?);
                }
            }
            if let Some(resampler) = &mut self.resampler {
                resampler.push(&self.scratch, &mut self.pending)?;
            }
            if !more {
                if let Some(resampler) = self.resampler.take() {
                    resampler.finish(&mut self.pending)?;
                }
                self.done = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_lengths_cover_the_signal() {
        assert_eq!(
            window_lengths(0, 10).collect::<Vec<_>>(),
            Vec::<usize>::new()
        );
        assert_eq!(window_lengths(10, 10).collect::<Vec<_>>(), [10]);
        assert_eq!(window_lengths(25, 10).collect::<Vec<_>>(), [10, 10, 5]);
        assert_eq!(window_lengths(3, 10).collect::<Vec<_>>(), [3]);
    }
}
