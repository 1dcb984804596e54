//! Arbitrary bytes through the audio front-end: decode (every container, with each extension
//! hint), downmix, resample to 16 kHz and log-mel of the first window.
#![no_main]

use auris_audio::{decode_bytes, to_16k, MelConfig, MelExtractor, CHUNK_SAMPLES};
use libfuzzer_sys::fuzz_target;

const HINTS: [Option<&str>; 5] = [None, Some("wav"), Some("mp3"), Some("flac"), Some("ogg")];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let hint = HINTS[usize::from(selector) % HINTS.len()];
    let Ok(pcm) = decode_bytes(bytes.to_vec(), hint, "fuzz") else {
        return;
    };
    let path = std::path::Path::new("fuzz");
    let Ok(samples) = to_16k(&pcm, path) else {
        return;
    };
    let mel = MelExtractor::new(MelConfig::whisper(80)).expect("the Whisper config is valid");
    let first = &samples[..samples.len().min(CHUNK_SAMPLES)];
    let _ = mel.window(first);
});
