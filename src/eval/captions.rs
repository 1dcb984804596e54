//! `auris eval captions`: CIDEr-D, BLEU-4 and ROUGE-L of generated captions against reference
//! captions (Clotho, AudioCaps or any set in the same layout).
//!
//! Manifests: Clotho's CSV (`file_name`, `caption_1` .. `caption_5`; audio under
//! `--audio-dir`), or JSON Lines with one `{"audio": PATH, "captions": [...]}` per line (an
//! `id` is optional; relative audio paths are under `--audio-dir`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use auris::Error;
use serde::Deserialize;

use super::caption_metrics::{bleu_4, cider_d, rouge_l, tokenize, Tokens};
use super::sweep::{by_config, Config, Prediction, Row, SweepItem};

/// One clip and its reference captions.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct CaptionItem {
    /// The id the predictions file keys on (the audio path as written, by default).
    #[serde(default)]
    pub(crate) id: String,
    /// The clip, relative to the audio folder.
    pub(crate) audio: PathBuf,
    /// The reference captions.
    pub(crate) captions: Vec<String>,
}

/// Reads a Clotho CSV (by its `.csv` extension) or a JSON Lines manifest. Every item needs a
/// non-empty reference and an id of its own.
pub(crate) fn read_manifest(path: &Path) -> Result<Vec<CaptionItem>, Error> {
    let is_csv = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let mut items = if is_csv {
        read_csv(path)?
    } else {
        super::read_json_lines(path)?
    };
    for item in &mut items {
        if item.id.is_empty() {
            item.id = item.audio.display().to_string();
        }
        item.captions.retain(|c| !tokenize(c).is_empty());
        if item.captions.is_empty() {
            return Err(super::bad_file(
                path,
                format!("item {}: no reference caption", item.id),
            ));
        }
    }
    super::unique_ids(path, items.iter().map(|i| i.id.as_str()))?;
    super::non_empty(path, items)
}

/// Clotho's CSV: the `file_name` column and every `caption_N` column, in N order.
fn read_csv(path: &Path) -> Result<Vec<CaptionItem>, Error> {
    let mut reader = csv::Reader::from_reader(super::open(path)?);
    let bad = |reason: String| super::bad_file(path, reason);
    let headers = reader.headers().map_err(|e| bad(e.to_string()))?.clone();
    let file_col = headers
        .iter()
        .position(|h| h.trim() == "file_name")
        .ok_or_else(|| bad("no file_name column (Clotho's CSV layout)".to_string()))?;
    let mut caption_cols: Vec<(usize, usize)> = headers
        .iter()
        .enumerate()
        .filter_map(|(i, h)| Some((h.trim().strip_prefix("caption_")?.parse().ok()?, i)))
        .collect();
    caption_cols.sort_unstable();
    if caption_cols.is_empty() {
        return Err(bad("no caption_N columns (Clotho's CSV layout)".to_string()));
    }
    let mut items = Vec::new();
    for (line, record) in reader.records().enumerate() {
        let record = record.map_err(|e| bad(format!("record {}: {e}", line + 1)))?;
        let file = record.get(file_col).unwrap_or_default().trim();
        if file.is_empty() {
            return Err(bad(format!("record {}: empty file_name", line + 1)));
        }
        items.push(CaptionItem {
            id: file.to_string(),
            audio: PathBuf::from(file),
            captions: caption_cols
                .iter()
                .filter_map(|&(_, i)| record.get(i).map(|c| c.trim().to_string()))
                .collect(),
        });
    }
    Ok(items)
}

/// The sweep's items: one captioning prompt, audio paths under `audio_dir`.
pub(crate) fn sweep_items(
    items: &[CaptionItem],
    instruction: &str,
    audio_dir: &Path,
) -> Vec<SweepItem> {
    super::sweep::instruction_items(
        items
            .iter()
            .map(|item| (item.id.clone(), super::resolve(audio_dir, &item.audio))),
        instruction,
    )
}

/// CIDEr-D, BLEU-4 and ROUGE-L per configuration over the items it has predictions for
/// (document frequencies over those items' references).
pub(crate) fn rows(
    configs: &[Config],
    items: &[CaptionItem],
    predictions: &[Prediction],
) -> Vec<Row> {
    let refs: HashMap<&str, Vec<Tokens>> = items
        .iter()
        .map(|i| {
            (
                i.id.as_str(),
                i.captions.iter().map(|c| tokenize(c)).collect(),
            )
        })
        .collect();
    by_config(configs, predictions)
        .into_iter()
        .map(|(config, preds)| {
            let mut row = Row::new(config, &preds);
            let (cands, references): (Vec<Tokens>, Vec<Vec<Tokens>>) = preds
                .iter()
                .filter_map(|p| Some((tokenize(&p.prediction), refs.get(p.id.as_str())?.clone())))
                .unzip();
            let round = |x: f64| super::sweep::round(x, 6);
            row.metrics
                .insert("cider_d".into(), round(cider_d(&cands, &references)));
            row.metrics
                .insert("bleu_4".into(), round(bleu_4(&cands, &references)));
            row.metrics
                .insert("rouge_l".into(), round(rouge_l(&cands, &references)));
            row
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clotho_csv_with_quoted_commas() {
        let dir = std::env::temp_dir().join(format!("auris-clotho-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("captions.csv");
        std::fs::write(
            &path,
            "file_name,caption_1,caption_2,caption_3\n\
             a.wav,\"A dog barks, then stops.\",A dog barking.,\n\
             b.wav,Rain on a roof.,Heavy rain falls.,Water drips.\n",
        )
        .unwrap();
        let items = read_manifest(&path).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].id, "a.wav");
        assert_eq!(
            items[0].captions,
            ["A dog barks, then stops.", "A dog barking."]
        );
        assert_eq!(items[1].captions.len(), 3);
        std::fs::write(&path, "name,caption_1\na.wav,x\n").unwrap();
        let err = read_manifest(&path).unwrap_err().to_string();
        assert!(err.contains("file_name"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
