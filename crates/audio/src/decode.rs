//! Decoding audio files to mono `f32` PCM with symphonia.

use std::fs::File;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{
    CodecParameters, Decoder, DecoderOptions, CODEC_TYPE_FLAC, CODEC_TYPE_NULL,
};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatOptions, FormatReader, Packet, Track};
use symphonia::core::io::{MediaSource, MediaSourceStream};
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
/// naming `path`. The file is read as it is decoded (see [`PcmStream`]); only the samples are
/// held.
pub fn decode_file(path: &Path) -> Result<Pcm, AudioError> {
    PcmStream::open(path)?.collect()
}

/// Decodes in-memory audio; like [`decode_file`], with `hint_ext` (e.g. `"wav"`, no dot) as
/// the format hint and `name` used in place of a path in errors.
pub fn decode_bytes(bytes: Vec<u8>, hint_ext: Option<&str>, name: &str) -> Result<Pcm, AudioError> {
    PcmStream::from_bytes(bytes, hint_ext, name)?.collect()
}

/// What the decoder reads, for error messages.
pub const FORMATS_READ: &str = "WAV (PCM, float, ADPCM), FLAC, MP3 and Ogg Vorbis";

/// An audio file decoded packet by packet: each call to [`PcmStream::next_packet`] reads one
/// packet of the container, decodes it and appends its frames, downmixed to mono, so a file of
/// any length is decoded in memory bounded by one packet (the container's own read-ahead
/// buffer aside). Errors are those of [`decode_file`], raised when the packet that causes them
/// is reached; the length check against the header comes at the end of the stream.
pub struct PcmStream {
    format: Box<dyn FormatReader>,
    decoder: Box<dyn Decoder>,
    track_id: u32,
    params: CodecParameters,
    path: PathBuf,
    layout: Option<(u32, usize)>,
    interleaved: Option<SampleBuffer<f32>>,
    /// Frames decoded so far (per channel).
    frames: u64,
    ended: bool,
}

impl PcmStream {
    /// Opens `path` and reads the container's header; no audio is decoded yet. A path that is
    /// not a regular file (a pipe) is read into memory first, since the containers need to
    /// seek.
    pub fn open(path: &Path) -> Result<Self, AudioError> {
        let io = |source| AudioError::Io {
            path: path.to_path_buf(),
            source,
        };
        let ext = path.extension().and_then(|e| e.to_str());
        let file = File::open(path).map_err(io)?;
        if !file.metadata().map_err(io)?.is_file() {
            let bytes = std::fs::read(path).map_err(io)?;
            return Self::from_source(Cursor::new(bytes), ext, path.to_path_buf());
        }
        Self::from_source(file, ext, path.to_path_buf())
    }

    /// Like [`PcmStream::open`] for in-memory audio, as [`decode_bytes`] takes it.
    pub fn from_bytes(
        bytes: Vec<u8>,
        hint_ext: Option<&str>,
        name: &str,
    ) -> Result<Self, AudioError> {
        Self::from_source(Cursor::new(bytes), hint_ext, PathBuf::from(name))
    }

    fn from_source<R>(
        mut source: R,
        hint_ext: Option<&str>,
        path: PathBuf,
    ) -> Result<Self, AudioError>
    where
        R: Read + Seek + Send + Sync + 'static,
    {
        let io = |source| AudioError::Io {
            path: path.clone(),
            source,
        };
        let total = source.seek(SeekFrom::End(0)).map_err(io)?;
        if total == 0 {
            return Err(AudioError::Empty { path });
        }
        // symphonia's probe fails with "out of bounds" on an ID3v2 tag of size 0 (written by
        // common taggers); the tags carry no audio, so the probe starts after them.
        let tags = id3v2_tags_len(&mut source, total)
            .map_err(io)?
            .map_err(|reason| AudioError::Malformed {
                path: path.clone(),
                reason,
            })?;
        if tags == total {
            return Err(AudioError::Empty { path });
        }
        let mut magic = [0u8; 4];
        source.seek(SeekFrom::Start(tags)).map_err(io)?;
        let n = read_up_to(&mut source, &mut magic).map_err(io)?;
        let known_magic = has_audio_magic(&magic[..n]);
        source.seek(SeekFrom::Start(tags)).map_err(io)?;
        let source = Skipped {
            inner: source,
            start: tags,
            len: total - tags,
        };

        let mss = MediaSourceStream::new(Box::new(source), Default::default());
        let mut hint = Hint::new();
        if let Some(ext) = hint_ext {
            hint.with_extension(ext);
        }
        // Gapless: drop the encoder delay and padding of MP3 (LAME tag), as ffmpeg and
        // libsndfile do, so that samples line up with the reference decoders.
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
                // A recognised container whose header is cut off or malformed is corrupt;
                // bytes with no audio signature at all are simply not audio.
                err if known_magic => AudioError::Corrupt {
                    path: path.clone(),
                    source: err,
                },
                err => AudioError::Unsupported {
                    path: path.clone(),
                    what: format!("no audio container recognised ({err})"),
                },
            })?;
        Self::from_format(probed.format, path)
    }

    fn from_format(format: Box<dyn FormatReader>, path: PathBuf) -> Result<Self, AudioError> {
        let track = select_track(format.as_ref()).ok_or_else(|| AudioError::Unsupported {
            path: path.clone(),
            what: "no audio track".to_string(),
        })?;
        let track_id = track.id;
        let params = track.codec_params.clone();
        let decoder = symphonia::default::get_codecs()
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
        Ok(Self {
            format,
            decoder,
            track_id,
            params,
            path,
            layout: None,
            interleaved: None,
            frames: 0,
            ended: false,
        })
    }

    /// The file (or the name given to [`PcmStream::from_bytes`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The sample rate in Hz and the channel count, known once a packet has been decoded.
    pub fn layout(&self) -> Option<(u32, usize)> {
        self.layout
    }

    /// Frames (samples per channel) decoded so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Decodes the next packet of the audio track and appends its mono samples to `out`.
    /// Returns `false` at the end of the stream, after checking the stream held audio and, for
    /// the formats whose header states it exactly, all the frames it declares.
    pub fn next_packet(&mut self, out: &mut Vec<f32>) -> Result<bool, AudioError> {
        loop {
            if self.ended {
                return Ok(false);
            }
            let packet = match self.format.next_packet() {
                Ok(packet) => packet,
                // The readers signal the end of the stream this way.
                Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    self.ended = true;
                    self.check_end()?;
                    return Ok(false);
                }
                Err(SymError::ResetRequired) => {
                    return Err(unsupported(
                        &self.path,
                        "stream parameters change mid-file (chained stream)".to_string(),
                    ))
                }
                Err(source) => return Err(corrupt(&self.path, source)),
            };
            if packet.track_id() != self.track_id {
                continue;
            }
            if self.decode_packet(&packet, out)? {
                return Ok(true);
            }
        }
    }

    /// Decodes the whole remaining stream into one [`Pcm`].
    pub fn collect(mut self) -> Result<Pcm, AudioError> {
        let mut samples = Vec::new();
        while self.next_packet(&mut samples)? {}
        let (sample_rate, channels) = self.layout.ok_or(AudioError::Empty {
            path: self.path.clone(),
        })?;
        Ok(Pcm {
            samples,
            sample_rate,
            channels,
        })
    }

    /// Decodes one packet; `false` when it held no frame.
    fn decode_packet(&mut self, packet: &Packet, out: &mut Vec<f32>) -> Result<bool, AudioError> {
        // Decode errors are fatal: skipping the packet would silently drop audio.
        let decoded = match self.decoder.decode(packet) {
            Ok(decoded) => decoded,
            Err(source) => return Err(corrupt(&self.path, source)),
        };
        let spec = *decoded.spec();
        let n_channels = spec.channels.count();
        if n_channels == 0 {
            return Err(unsupported(&self.path, "zero audio channels".to_string()));
        }
        match self.layout {
            None => self.layout = Some((spec.rate, n_channels)),
            Some(first) if first != (spec.rate, n_channels) => {
                return Err(unsupported(
                    &self.path,
                    format!(
                    "sample rate or channel count changes mid-stream ({} Hz x {} -> {} Hz x {})",
                    first.0, first.1, spec.rate, n_channels
                ),
                ))
            }
            Some(_) => {}
        }
        let frames = decoded.frames();
        if frames == 0 {
            return Ok(false);
        }
        let buf = match &mut self.interleaved {
            Some(buf) if buf.capacity() >= frames * n_channels => buf,
            slot => slot.insert(SampleBuffer::new(
                decoded.capacity().max(frames) as u64,
                spec,
            )),
        };
        buf.copy_interleaved_ref(decoded);
        out.reserve(frames);
        for (i, frame) in buf.samples().chunks_exact(n_channels).enumerate() {
            let mut sum = 0.0f64;
            for &s in frame {
                if !s.is_finite() {
                    return Err(AudioError::NonFinite {
                        path: self.path.clone(),
                        index: self.frames as usize + i,
                        value: s,
                    });
                }
                sum += f64::from(s);
            }
            out.push((sum / n_channels as f64) as f32);
        }
        self.frames += frames as u64;
        Ok(true)
    }

    /// The end-of-stream checks: some audio, and every frame the header declares.
    fn check_end(&self) -> Result<(), AudioError> {
        if self.layout.is_none() || self.frames == 0 {
            return Err(AudioError::Empty {
                path: self.path.clone(),
            });
        }
        if let Some(expected) = exact_frame_count(&self.params) {
            if self.frames < expected {
                return Err(AudioError::Truncated {
                    path: self.path.clone(),
                    expected_frames: expected,
                    decoded_frames: self.frames,
                });
            }
        }
        Ok(())
    }
}

fn corrupt(path: &Path, source: SymError) -> AudioError {
    AudioError::Corrupt {
        path: path.to_path_buf(),
        source,
    }
}

fn unsupported(path: &Path, what: String) -> AudioError {
    AudioError::Unsupported {
        path: path.to_path_buf(),
        what,
    }
}

/// A byte source seen from `start` on (past the ID3v2 tags), for symphonia: the containers
/// seek to positions counted from the start of their own data (the Ogg reader scans for the
/// last page), so positions are shifted by `start` both ways.
struct Skipped<R> {
    inner: R,
    start: u64,
    len: u64,
}

impl<R: Read> Read for Skipped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<R: Seek> Seek for Skipped<R> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        let at = match pos {
            SeekFrom::Start(n) => self
                .inner
                .seek(SeekFrom::Start(self.start.saturating_add(n)))?,
            other => self.inner.seek(other)?,
        };
        if at < self.start {
            self.inner.seek(SeekFrom::Start(self.start))?;
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek before the start of the audio data",
            ));
        }
        Ok(at - self.start)
    }
}

impl<R: Read + Seek + Send + Sync> MediaSource for Skipped<R> {
    fn is_seekable(&self) -> bool {
        true
    }

    fn byte_len(&self) -> Option<u64> {
        Some(self.len)
    }
}

/// Reads until `buf` is full or the source ends; the number of bytes read.
fn read_up_to(source: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match source.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Bytes taken by the ID3v2 tags at the start of `source` (`total` bytes long; several tags
/// may follow each other): a 10-byte header `"ID3" major minor flags size`, with the size a
/// 28-bit syncsafe integer excluding the header, plus a 10-byte footer when flag bit 4 is set
/// (ID3v2.4 section 3.1). The outer error is an I/O failure, the inner one a malformed tag.
fn id3v2_tags_len(
    source: &mut (impl Read + Seek),
    total: u64,
) -> std::io::Result<Result<u64, String>> {
    let mut at = 0u64;
    loop {
        let mut header = [0u8; 10];
        source.seek(SeekFrom::Start(at))?;
        if read_up_to(source, &mut header)? < 10 || !header.starts_with(b"ID3") {
            break;
        }
        let (major, flags, size) = (header[3], header[5], &header[6..10]);
        if major == 0xFF || header[4] == 0xFF || size.iter().any(|b| b & 0x80 != 0) {
            // Not a tag header (ID3v2 section 3.1 forbids these values): leave the bytes to
            // the probe.
            break;
        }
        let body = size.iter().fold(0u64, |n, &b| (n << 7) | u64::from(b));
        let footer = if flags & 0x10 != 0 { 10 } else { 0 };
        let end = at + 10 + body + footer;
        if end > total {
            return Ok(Err(format!(
                "the ID3v2 tag at byte {at} declares {body} bytes, past the end of the file ({total} bytes)"
            )));
        }
        at = end;
    }
    Ok(Ok(at))
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
