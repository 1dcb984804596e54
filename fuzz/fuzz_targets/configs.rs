//! Arbitrary bytes as each JSON file a checkpoint carries: config.json (parsed, validated and
//! sized by the memory estimate), generation_config.json, preprocessor_config.json and
//! processor_config.json (the mel front-end built from it), tokenizer_config.json (its chat
//! template picked and rendered), model.safetensors.index.json.
#![no_main]

use std::path::PathBuf;

use auris::config::{GenerationConfig, ModelConfig};
use auris::pipeline::Weights;
use auris::prompt::ChatTemplate;
use auris_audio::{MelConfig, MelExtractor};
use candle_core::DType;
use libfuzzer_sys::fuzz_target;

fn scratch(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("auris-fuzz-configs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("temp file");
    path
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    match selector % 6 {
        0 => {
            let path = scratch("config.json", bytes);
            if let Ok(cfg) = ModelConfig::from_file(&path) {
                let place = Weights::Checkpoint.placement(DType::F32, DType::BF16);
                let context = cfg.text_config.max_position_embeddings;
                let _ = auris::memory::estimate(&cfg, &[], &place, context).total();
            }
        }
        1 => {
            let path = scratch("generation_config.json", bytes);
            let _ = GenerationConfig::from_file(Some(&path));
        }
        2 => {
            let path = scratch("preprocessor_config.json", bytes);
            if let Ok(cfg) = MelConfig::from_preprocessor_json(&path) {
                let _ = MelExtractor::new(cfg);
            }
        }
        3 => {
            let path = scratch("processor_config.json", bytes);
            if let Ok(cfg) = MelConfig::from_processor_json(&path) {
                let _ = MelExtractor::new(cfg);
            }
        }
        4 => {
            let path = scratch("tokenizer_config.json", bytes);
            if let Ok(Some(t)) = ChatTemplate::from_model_files(None, None, Some(&path)) {
                let _ = t.render(&[], true);
            }
        }
        _ => {
            let _ = serde_json::from_slice::<auris::shards::ShardIndex>(bytes);
        }
    }
});
