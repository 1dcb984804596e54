//! Long audio runs window by window (decode, resample, log-mel, encode and prune one 30 s
//! window at a time, keeping only the kept rows): the result must be the whole-file path's.

use std::path::{Path, PathBuf};

use auris::pipeline::{AudioRequest, AudioSource, PromptSpec, Request, Response, Task};
use auris::prompt::{Message, Part};
use auris::Pipeline;
use auris_prune::{Policy, Remainder, Strategy};

use crate::common::{fixture, load_model};

/// A 16-bit PCM WAV of `seconds` at `rate` Hz with `channels` channels: a tone gliding up
/// with a pulse every second, so every window differs.
fn write_wav(path: &Path, rate: u32, channels: u16, seconds: f64) {
    let frames = (seconds * f64::from(rate)).round() as u32;
    let data = frames * u32::from(channels) * 2;
    let mut b = Vec::with_capacity(44 + data as usize);
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&channels.to_le_bytes());
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * u32::from(channels) * 2).to_le_bytes());
    b.extend_from_slice(&(channels * 2).to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data.to_le_bytes());
    for i in 0..frames {
        let t = f64::from(i) / f64::from(rate);
        let pulse = if t.fract() < 0.05 { 0.3 } else { 0.0 };
        for c in 0..channels {
            let f = 200.0 + 20.0 * t + 50.0 * f64::from(c);
            let v = 0.4 * (2.0 * std::f64::consts::PI * f * t).sin() + pulse;
            b.extend_from_slice(&((v * 32_000.0) as i16).to_le_bytes());
        }
    }
    std::fs::write(path, b).unwrap();
}

fn scratch_wav(name: &str, rate: u32, channels: u16, seconds: f64) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("auris-test-stream-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    write_wav(&path, rate, channels, seconds);
    path
}

fn request(p: &Pipeline, audio: &Path, policy: Policy) -> Request {
    let mut generate = p.default_generate_options(4);
    generate.sampling.temperature = None;
    Request {
        audio: audio.to_path_buf(),
        prompt: PromptSpec::Instruction {
            text: "Describe the audio.".to_string(),
            system: None,
        },
        policy,
        generate,
        task: Task::Generate,
        context: Default::default(),
    }
}

fn assert_same(what: &str, streamed: &Response, whole: &Response) {
    assert_eq!(streamed.kept_indices, whole.kept_indices, "{what}");
    assert_eq!(streamed.n_audio_tokens, whole.n_audio_tokens, "{what}");
    assert_eq!(streamed.prompt_token_ids, whole.prompt_token_ids, "{what}");
    assert_eq!(streamed.output_token_ids, whole.output_token_ids, "{what}");
    assert_eq!(streamed.duration_s, whole.duration_s, "{what}");
    assert_eq!(streamed.sample_rate, whole.sample_rate, "{what}");
    assert_eq!(streamed.context, whole.context, "{what}");
}

#[test]
fn streamed_run_equals_the_whole_file_run() {
    let p = load_model("tiny-chat");
    // 61 s at 44.1 kHz stereo: three windows (30 s, 30 s, 1 s), resampled and downmixed.
    let wav = scratch_wav("glide_61s_44k1.wav", 44_100, 2, 61.0);
    let audio = p.load_audio(&wav).unwrap();
    let encoded = p.encode(&audio, true).unwrap();
    assert_eq!(audio.windows.len(), 3);
    let strategies = [
        Strategy::None,
        Strategy::default(),
        Strategy::Segmentwise {
            segments: 4,
            remainder: Remainder::Drop,
        },
        Strategy::TopK,
        Strategy::Random { seed: 3 },
        Strategy::Uniform,
        Strategy::VisionZip {
            contextual_share: 0.18,
        },
    ];
    for strategy in strategies {
        for keep in [1.0, 0.3] {
            let policy = Policy::new(strategy, keep).unwrap();
            let r = request(&p, &wav, policy);
            let streamed = p.run(&r, &mut |_| true).unwrap();
            let whole = p
                .run_encoded(&r, &audio, &encoded, 0.0, &mut |_| true)
                .unwrap();
            assert_same(&format!("{strategy:?} keep {keep}"), &streamed, &whole);
            assert_eq!(streamed.n_audio_tokens, 750 + 750 + 25);
        }
    }
}

#[test]
fn a_recording_ending_in_a_window_without_tokens_runs() {
    // 30 s and 10 ms at 16 kHz: the second window has 160 samples, one mel frame, no token.
    let p = load_model("tiny-chat");
    let wav = scratch_wav("tail_30s01_16k.wav", 16_000, 1, 30.01);
    for strategy in [Strategy::default(), Strategy::None] {
        let policy = Policy::new(strategy, 0.5).unwrap();
        let r = request(&p, &wav, policy);
        let streamed = p.run(&r, &mut |_| true).unwrap();
        assert_eq!(streamed.n_audio_tokens, 750, "{strategy:?}");
        let audio = p.load_audio(&wav).unwrap();
        let encoded = p.encode(&audio, true).unwrap();
        let whole = p
            .run_encoded(&r, &audio, &encoded, 0.0, &mut |_| true)
            .unwrap();
        assert_same(&format!("{strategy:?}"), &streamed, &whole);
    }
}

/// A user turn as the server receives it: one audio part per upload, then the question.
fn chat(uploads: usize, question: &str) -> PromptSpec {
    let mut content: Vec<Part> = (1..=uploads)
        .map(|i| Part::Audio {
            audio_url: format!("audio {i}"),
        })
        .collect();
    content.push(Part::Text {
        text: question.to_string(),
    });
    PromptSpec::Chat(vec![Message {
        role: "user".to_string(),
        content,
    }])
}

fn upload(path: &Path, name: &str) -> AudioSource<'static> {
    AudioSource::Bytes {
        bytes: std::fs::read(path).unwrap(),
        format: Some("wav".to_string()),
        name: name.to_string(),
    }
}

/// What `auris serve` runs for a chat request with one audio (an upload and the conversation)
/// goes through the same core as `auris ask` on the file, and gives the same ids.
#[test]
fn a_chat_request_with_one_upload_equals_ask() {
    let p = load_model("tiny-chat");
    let wav = fixture("audio/tone_440_16k.wav");
    let question = "What is this?";
    for policy in [
        Policy::new(Strategy::None, 1.0).unwrap(),
        Policy::new(Strategy::default(), 0.5).unwrap(),
    ] {
        let mut ask = request(&p, &wav, policy);
        ask.prompt = PromptSpec::Instruction {
            text: question.to_string(),
            system: None,
        };
        let asked = p.run(&ask, &mut |_| true).unwrap();
        let mut served = ask.with_source(upload(&wav, "audio 1"));
        served.prompt = chat(1, question);
        let served = p.execute(&served, &mut |_| true).unwrap();
        let what = format!("{policy:?}");
        assert_eq!(served.prompt_token_ids, asked.prompt_token_ids, "{what}");
        assert_eq!(served.output_token_ids, asked.output_token_ids, "{what}");
        assert_eq!(served.kept_indices, asked.kept_indices, "{what}");
        assert_eq!(served.context, asked.context, "{what}");
        assert_eq!(served.audio, Path::new("audio 1"));
    }
}

/// Several inputs share one budget and one merge: each gets its own span, in order, and the
/// kept indices of an input count the tokens of the inputs before it.
#[test]
fn several_inputs_are_joined_in_order() {
    let p = load_model("tiny-chat");
    let tone = fixture("audio/tone_440_16k.wav");
    let long = fixture("audio/long_42s_16k.wav");
    let policy = Policy::new(Strategy::default(), 0.5).unwrap();
    let one = |path: &Path| {
        let mut r = request(&p, path, policy).with_source(upload(path, "a"));
        r.prompt = chat(1, "Compare.");
        p.execute(&r, &mut |_| true).unwrap()
    };
    let (first, second) = (one(&tone), one(&long));
    let both = AudioRequest {
        inputs: vec![upload(&tone, "a"), upload(&long, "b")],
        prompt: chat(2, "Compare."),
        ..request(&p, &tone, policy).with_source(upload(&tone, "a"))
    };
    let both = p.execute(&both, &mut |_| true).unwrap();
    let offset = first.n_audio_tokens;
    let mut kept = first.kept_indices.clone();
    kept.extend(second.kept_indices.iter().map(|i| offset + i));
    assert_eq!(both.kept_indices, kept);
    assert_eq!(
        both.n_audio_tokens,
        first.n_audio_tokens + second.n_audio_tokens
    );
    assert_eq!(both.context.audio_tokens, both.n_audio_tokens);
    assert_eq!(both.duration_s, first.duration_s + second.duration_s);
    let audio = p.special_tokens().audio;
    let spans = both
        .prompt_token_ids
        .windows(2)
        .filter(|w| w[0] != audio && w[1] == audio)
        .count();
    assert_eq!(spans, 2);
}
