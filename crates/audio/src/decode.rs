//! Decoding audio files to mono `f32` PCM with symphonia.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{CodecParameters, DecoderOptions, CODEC_TYPE_FLAC, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatOptions, FormatReader, Track};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use crate::error::AudioError;

/// Decoded audio: mono samples at the file's own rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Pcm {
    /// Mono samples in `[-1, 1]` (integer formats are scaled by `2^(bits-1)`), the mean of all
    /// channels of each frame. Never empty, always finite.
    pub samples: Vec<f32>,
    /// Sample rate of `samples` in Hz (the file's rate; not resampled).
    pub sample_rate: u32,
    /// Number of channels in the file, before averaging.
    pub channels: usize,
}

/// Decodes an audio file (WAV, FLAC, MP3, Ogg Vorbis) to mono PCM at its own sample rate.
///
/// The container is recognised from its content; the file extension is only a hint. Channels
/// are averaged. Decoding is strict: a malformed packet anywhere in the stream, a file cut off
/// before the length its header declares, a NaN/infinite sample or an empty stream is an error
/// naming `path`.
pub fn decode_file(path: &Path) -> Result<Pcm, AudioError> {
    let bytes = std::fs::read(path).map_err(|source| AudioError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let ext = path.extension().and_then(|e| e.to_str());
    decode_with_path(bytes, ext, path.to_path_buf())
}

/// Decodes in-memory audio; like [`decode_file`], with `hint_ext` (e.g. `"wav"`, no dot) as
/// the format hint and `name` used in place of a path in errors.
pub fn decode_bytes(bytes: Vec<u8>, hint_ext: Option<&str>, name: &str) -> Result<Pcm, AudioError> {
    decode_with_path(bytes, hint_ext, PathBuf::from(name))
}

/// What the decoder reads, for error messages.
pub const FORMATS_READ: &str = "WAV (PCM, float, ADPCM), FLAC, MP3 and Ogg Vorbis";

fn decode_with_path(
    mut bytes: Vec<u8>,
    hint_ext: Option<&str>,
    path: PathBuf,
) -> Result<Pcm, AudioError> {
    if bytes.is_empty() {
        return Err(AudioError::Empty { path });
    }
    // symphonia's probe fails with "out of bounds" on an ID3v2 tag of size 0 (written by
    // common taggers); the tags carry no audio, so they are dropped before probing.
    let tags = id3v2_tags_len(&bytes).map_err(|reason| AudioError::Malformed {
        path: path.clone(),
        reason,
    })?;
    if tags > 0 {
        bytes.drain(..tags);
        if bytes.is_empty() {
            return Err(AudioError::Empty { path });
        }
    }
    let known_magic = has_audio_magic(&bytes);

    let mss = MediaSourceStream::new(Box::new(Cursor::new(bytes)), Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = hint_ext {
        hint.with_extension(ext);
    }
    // Gapless: drop the encoder delay and padding of MP3 (LAME tag), as ffmpeg and libsndfile
    // do, so that samples line up with the reference decoders.
    let format_opts = FormatOptions {
        enable_gapless: true,
        ..Default::default()
    };
    let probed = symphonia::default::get_probe()
        .format(&hint, mss, &format_opts, &MetadataOptions::default())
        .map_err(|err| match err {
            SymError::Unsupported(what) => AudioError::Unsupported {
                path: path.clone(),
                what: what.to_string(),
            },
            // A recognised container whose header is cut off or malformed is corrupt; bytes
            // with no audio signature at all are simply not audio.
            err if known_magic => AudioError::Corrupt {
                path: path.clone(),
                source: err,
            },
            err => AudioError::Unsupported {
                path: path.clone(),
                what: format!("no audio container recognised ({err})"),
            },
        })?;

    decode_stream(probed.format, path)
}

/// Bytes taken by the ID3v2 tags at the start of `bytes` (several may follow each other):
/// a 10-byte header `"ID3" major minor flags size`, with the size a 28-bit syncsafe integer
/// excluding the header, plus a 10-byte footer when flag bit 4 is set (ID3v2.4 section 3.1).
fn id3v2_tags_len(bytes: &[u8]) -> Result<usize, String> {
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + 10).filter(|h| h.starts_with(b"ID3")) {
        let (major, flags, size) = (header[3], header[5], &header[6..10]);
        if major == 0xFF || header[4] == 0xFF || size.iter().any(|b| b & 0x80 != 0) {
            // Not a tag header (ID3v2 section 3.1 forbids these values): leave the bytes to
            // the probe.
            break;
        }
        let body = size.iter().fold(0usize, |n, &b| (n << 7) | usize::from(b));
        let footer = if flags & 0x10 != 0 { 10 } else { 0 };
        let end = at + 10 + body + footer;
        if end > bytes.len() {
            return Err(format!(
                "the ID3v2 tag at byte {at} declares {body} bytes, past the end of the file ({} bytes)",
                bytes.len()
            ));
        }
        at = end;
    }
    Ok(at)
}

/// Whether the bytes start like one of the containers we support.
fn has_audio_magic(bytes: &[u8]) -> bool {
    const MAGICS: [&[u8]; 5] = [b"RIFF", b"RIFX", b"fLaC", b"OggS", b"ID3"];
    MAGICS.iter().any(|m| bytes.starts_with(m))
        || matches!(bytes, [0xFF, b, ..] if b & 0xE0 == 0xE0)
}

fn select_track(format: &dyn FormatReader) -> Option<&Track> {
    let usable = |t: &&Track| t.codec_params.codec != CODEC_TYPE_NULL;
    format
        .default_track()
        .filter(usable)
        .or_else(|| format.tracks().iter().find(usable))
}

fn decode_stream(mut format: Box<dyn FormatReader>, path: PathBuf) -> Result<Pcm, AudioError> {
    let track = select_track(format.as_ref()).ok_or_else(|| AudioError::Unsupported {
        path: path.clone(),
        what: "no audio track".to_string(),
    })?;
    let track_id = track.id;
    let params = track.codec_params.clone();
    let mut decoder = symphonia::default::get_codecs()
        .make(&params, &DecoderOptions::default())
        .map_err(|err| match err {
            SymError::Unsupported(what) => AudioError::Unsupported {
                path: path.clone(),
                what: what.to_string(),
            },
            source => AudioError::Corrupt {
                path: path.clone(),
                source,
            },
        })?;

    let corrupt = |source: SymError| AudioError::Corrupt {
        path: path.clone(),
        source,
    };
    let unsupported = |what: String| AudioError::Unsupported {
        path: path.clone(),
        what,
    };

    let mut mono: Vec<f32> = Vec::new();
    let mut layout: Option<(u32, usize)> = None;
    let mut interleaved: Option<SampleBuffer<f32>> = None;
    let mut decoded_frames: u64 = 0;

    loop {
        let packet = match format.next_packet() {
            Ok(packet) => packet,
            // The readers signal the end of the stream this way.
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(SymError::ResetRequired) => {
                return Err(unsupported(
                    "stream parameters change mid-file (chained stream)".to_string(),
                ))
            }
            Err(err) => return Err(corrupt(err)),
        };
        if packet.track_id() != track_id {
            continue;
        }
        // Decode errors are fatal: skipping the packet would silently drop audio.
        let decoded = decoder.decode(&packet).map_err(corrupt)?;
        let spec = *decoded.spec();
        let n_channels = spec.channels.count();
        if n_channels == 0 {
            return Err(unsupported("zero audio channels".to_string()));
        }
        match layout {
            None => layout = Some((spec.rate, n_channels)),
            Some(first) if first != (spec.rate, n_channels) => {
                return Err(unsupported(format!(
                    "sample rate or channel count changes mid-stream ({} Hz x {} -> {} Hz x {})",
                    first.0, first.1, spec.rate, n_channels
                )))
            }
            Some(_) => {}
        }
        let frames = decoded.frames();
        if frames == 0 {
            continue;
        }
        let buf = match &mut interleaved {
            Some(buf) if buf.capacity() >= frames * n_channels => buf,
            slot => slot.insert(SampleBuffer::new(
                decoded.capacity().max(frames) as u64,
                spec,
            )),
        };
        buf.copy_interleaved_ref(decoded);
        for frame in buf.samples().chunks_exact(n_channels) {
            let mut sum = 0.0f64;
            for &s in frame {
                if !s.is_finite() {
                    return Err(AudioError::NonFinite {
                        path: path.clone(),
                        index: mono.len(),
                        value: s,
                    });
                }
                sum += f64::from(s);
            }
            mono.push((sum / n_channels as f64) as f32);
        }
        decoded_frames += frames as u64;
    }

    let Some((sample_rate, channels)) = layout else {
        return Err(AudioError::Empty { path });
    };
    if mono.is_empty() {
        return Err(AudioError::Empty { path });
    }
    if let Some(expected) = exact_frame_count(&params) {
        if decoded_frames < expected {
            return Err(AudioError::Truncated {
                path,
                expected_frames: expected,
                decoded_frames,
            });
        }
    }
    Ok(Pcm {
        samples: mono,
        sample_rate,
        channels,
    })
}

/// The frame count the header declares, for codecs where it is exact (PCM in WAV/AIFF, FLAC
/// STREAMINFO). Lossy formats only estimate it (MP3 from the bitrate), so they are not
/// checked; their truncation shows up as a decode error or not at all.
fn exact_frame_count(params: &CodecParameters) -> Option<u64> {
    let n_frames = params.n_frames?;
    let is_pcm = symphonia::default::get_codecs()
        .get_codec(params.codec)
        .is_some_and(|d| d.short_name.starts_with("pcm_"));
    if params.codec == CODEC_TYPE_FLAC {
        return (n_frames > 0).then_some(n_frames);
    }
    if !is_pcm {
        return None;
    }
    // Streaming writers put 0xFFFF_FFFF in the data chunk size when they cannot seek back;
    // such a size is a placeholder, not a declared length.
    let channels = params.channels.map_or(1, |c| c.count()).max(1) as u64;
    let bits = params
        .bits_per_coded_sample
        .or(params.bits_per_sample)
        .unwrap_or(8)
        .max(8) as u64;
    let bytes_per_frame = channels * bits.div_ceil(8);
    let declared_bytes = n_frames.saturating_mul(bytes_per_frame);
    (declared_bytes + bytes_per_frame < u64::from(u32::MAX)).then_some(n_frames)
}
