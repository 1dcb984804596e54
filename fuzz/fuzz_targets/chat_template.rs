//! Hostile chat templates and prompts: the first line of the input is the message text, the
//! rest the template, rendered with a system, a user (audio + text) and an assistant turn.
#![no_main]

use auris::prompt::{ChatTemplate, Message, Part};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (prompt, template) = text.split_once('\n').unwrap_or((text, "{{ messages }}"));
    let say = |role: &str, content: Vec<Part>| Message {
        role: role.to_string(),
        content,
    };
    let messages = [
        say("system", vec![Part::Text { text: prompt.to_string() }]),
        say(
            "user",
            vec![
                Part::Audio {
                    audio_url: "clip.wav".to_string(),
                },
                Part::Text { text: prompt.to_string() },
            ],
        ),
        say("assistant", vec![Part::Text { text: prompt.to_string() }]),
    ];
    let _ = ChatTemplate::new(template).render(&messages, true);
});
