//! `auris eval transcribe`: word error rate of an audio-language model asked to transcribe,
//! per pruning strategy and keep ratio.
//!
//! Where `auris eval asr-pruning` prunes Whisper's encoder frames and lets Whisper's own
//! decoder transcribe, this prunes the audio tokens after the pooler and the language model
//! writes the transcript (Qwen2-Audio's setting), through the shared sweep. The manifest is the
//! one of `asr-pruning` (JSON Lines `{"audio", "text", "source"}`); the WER normaliser too.
//! WERs are corpus-level (errors and reference words summed over clips), overall and per
//! source.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use auris::Error;

use super::asr::ManifestEntry;
use super::sweep::{by_config, Config, Prediction, Row, SweepItem};
use super::wer::ErrorCount;

/// The default instruction (what auris-mini was trained on).
pub(crate) const DEFAULT_INSTRUCTION: &str = "Transcribe the audio.";

/// The manifest's clips, keyed by their audio path as written (relative paths resolved
/// against the manifest's folder, as `asr-pruning` does); every path must be unique.
pub(crate) fn read_manifest(path: &Path) -> Result<Vec<ManifestEntry>, Error> {
    let entries = super::asr::read_manifest(path)?;
    let ids: Vec<String> = entries.iter().map(item_id).collect();
    super::unique_ids(path, ids.iter().map(String::as_str))?;
    Ok(entries)
}

/// The id of a clip: its audio path as written.
pub(crate) fn item_id(entry: &ManifestEntry) -> String {
    entry.audio.display().to_string()
}

/// The sweep's items: the same instruction for every clip.
pub(crate) fn sweep_items(entries: &[ManifestEntry], instruction: &str) -> Vec<SweepItem> {
    super::sweep::instruction_items(
        entries.iter().map(|e| (item_id(e), e.audio.clone())),
        instruction,
    )
}

/// Corpus WER per configuration, overall (`wer`) and per source (group `source`).
pub(crate) fn rows(
    configs: &[Config],
    entries: &[ManifestEntry],
    predictions: &[Prediction],
) -> Vec<Row> {
    let refs: HashMap<String, &ManifestEntry> = entries.iter().map(|e| (item_id(e), e)).collect();
    by_config(configs, predictions)
        .into_iter()
        .map(|(config, preds)| {
            let mut row = Row::new(config, &preds);
            let mut all = ErrorCount::default();
            let mut by_source: BTreeMap<String, ErrorCount> = BTreeMap::new();
            for p in &preds {
                let Some(entry) = refs.get(&p.id) else {
                    continue;
                };
                let count = ErrorCount::of(&entry.text, &p.prediction);
                all.add(count);
                let source = entry.source.clone().unwrap_or_else(|| "all".to_string());
                by_source.entry(source).or_default().add(count);
            }
            row.metrics
                .insert("wer".into(), super::sweep::round(all.rate(), 4));
            row.metrics.insert("errors".into(), all.errors as f64);
            row.metrics.insert("words".into(), all.words as f64);
            row.groups.insert(
                "source".into(),
                by_source
                    .into_iter()
                    .map(|(s, c)| (s, super::sweep::round(c.rate(), 4)))
                    .collect(),
            );
            row
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use auris_prune::Strategy;

    fn prediction(id: &str, strategy: &str, keep: f32, text: &str) -> Prediction {
        Prediction {
            id: id.into(),
            strategy: strategy.into(),
            keep,
            mode: "generate".into(),
            prediction: text.into(),
            correct: None,
            n_audio_tokens: 10,
            n_kept: 10,
            prefill_ms: 1.0,
            ttft_ms: 2.0,
            end_to_end_ms: 3.0,
            settings: String::new(),
        }
    }

    #[test]
    fn corpus_wer_per_configuration_and_source() {
        let entries = vec![
            ManifestEntry {
                audio: "a.wav".into(),
                text: "Press 1 now.".into(),
                source: Some("asterisk".into()),
            },
            ManifestEntry {
                audio: "b.wav".into(),
                text: "had he married".into(),
                source: Some("librivox".into()),
            },
        ];
        let configs = super::super::sweep::configs(&[Strategy::TopK], &[0.5]).unwrap();
        let preds = vec![
            // normalised alike: no error
            prediction("a.wav", "none", 1.0, "press one now"),
            prediction("b.wav", "none", 1.0, "had he married"),
            // one substitution and one deletion out of 6 words
            prediction("a.wav", "topk", 0.5, "press two now"),
            prediction("b.wav", "topk", 0.5, "had he"),
        ];
        let rows = rows(&configs, &entries, &preds);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].metrics["wer"], 0.0);
        assert_eq!(rows[1].metrics["wer"], 0.3333);
        assert_eq!(rows[1].groups["source"]["asterisk"], 0.3333);
        assert_eq!(rows[1].groups["source"]["librivox"], 0.3333);
        assert_eq!(rows[1].metrics["words"], 6.0);
    }
}
