//! `auris eval mmau`: multiple-choice accuracy on MMAU (arXiv 2410.19168), scored like the
//! authors' `evaluation.py` in the MMAU repository (github.com/Sakshi113/MMAU).
//!
//! The manifest is MMAU's JSON: a list of items with `id`, `audio_id` (relative to
//! `--audio-dir`), `question`, `choices`, `answer`, `task`, `category`, `sub-category` and
//! `difficulty`. Accuracy is reported overall, per task (sound, music, speech), per difficulty
//! and per sub-category.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use auris::{Error, PromptSpec};
use regex::Regex;
use serde::Deserialize;

use super::sweep::{by_config, Config, Prediction, Row, SweepItem};

/// The prompt the MMAU authors recommend; `{question}` and `{choices}` (one choice per line)
/// are filled in.
pub(crate) const DEFAULT_TEMPLATE: &str =
    "{question} Select one option from the provided choices.\n{choices}";

/// One MMAU item.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct MmauItem {
    /// The item's id.
    pub(crate) id: String,
    /// The clip, relative to the audio folder.
    pub(crate) audio_id: PathBuf,
    /// The question.
    pub(crate) question: String,
    /// The answer choices.
    pub(crate) choices: Vec<String>,
    /// The right choice's text.
    pub(crate) answer: String,
    /// `sound`, `music` or `speech`.
    #[serde(default)]
    pub(crate) task: Option<String>,
    /// The skill category.
    #[serde(default)]
    pub(crate) category: Option<String>,
    /// The sub-category.
    #[serde(default, rename = "sub-category")]
    pub(crate) sub_category: Option<String>,
    /// `easy`, `medium` or `hard`.
    #[serde(default)]
    pub(crate) difficulty: Option<String>,
}

/// Reads an MMAU JSON manifest; every item needs choices and an id of its own.
pub(crate) fn read_manifest(path: &Path) -> Result<Vec<MmauItem>, Error> {
    let items: Vec<MmauItem> = super::non_empty(path, super::read_json(path)?)?;
    if let Some(item) = items.iter().find(|i| i.choices.is_empty()) {
        return Err(super::bad_file(
            path,
            format!("item {}: no choices", item.id),
        ));
    }
    super::unique_ids(path, items.iter().map(|i| i.id.as_str()))?;
    Ok(items)
}

/// Fills `{question}` and `{choices}` in `template` in one pass (text inside the question is
/// never read as a placeholder).
pub(crate) fn render_prompt(template: &str, item: &MmauItem) -> String {
    let choices = item.choices.join("\n");
    let mut out = String::with_capacity(template.len() + item.question.len() + choices.len());
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("{question}") {
            out.push_str(&item.question);
            rest = t;
        } else if let Some(t) = tail.strip_prefix("{choices}") {
            out.push_str(&choices);
            rest = t;
        } else {
            out.push('{');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The sweep's items: prompts rendered, audio paths under `audio_dir`.
pub(crate) fn sweep_items(items: &[MmauItem], template: &str, audio_dir: &Path) -> Vec<SweepItem> {
    items
        .iter()
        .map(|item| SweepItem {
            id: item.id.clone(),
            audio: super::resolve(audio_dir, &item.audio_id),
            prompt: PromptSpec::Instruction {
                text: render_prompt(template, item),
                system: None,
            },
            choices: item.choices.clone(),
        })
        .collect()
}

static WORD: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\b\w+\b").expect("a valid regex"));

/// `set(re.findall(r'\b\w+\b', text.lower()))`.
fn word_set(text: &str) -> BTreeSet<String> {
    WORD.find_iter(&text.to_lowercase())
        .map(|m| m.as_str().to_string())
        .collect()
}

/// MMAU's `string_match`: the prediction is right when it contains every word of the answer
/// and no word of another choice, words that choice shares with the answer aside (a choice
/// with exactly the answer's words counts as the answer). An empty prediction is wrong.
pub(crate) fn string_match(answer: &str, prediction: &str, choices: &[String]) -> bool {
    let predicted = word_set(prediction);
    if predicted.is_empty() {
        return false;
    }
    let right = word_set(answer);
    let mut wrong = BTreeSet::new();
    for choice in choices {
        let words = word_set(choice);
        if words != right {
            wrong.extend(words.difference(&right).cloned());
        }
    }
    right.is_subset(&predicted) && predicted.is_disjoint(&wrong)
}

/// Accuracy overall and per task, difficulty and sub-category, one row per configuration.
/// Correctness is recomputed from the predictions' text, so a predictions file is rescored
/// with the current matcher.
pub(crate) fn rows(configs: &[Config], items: &[MmauItem], predictions: &[Prediction]) -> Vec<Row> {
    let by_id: HashMap<&str, &MmauItem> = items.iter().map(|i| (i.id.as_str(), i)).collect();
    by_config(configs, predictions)
        .into_iter()
        .map(|(config, preds)| {
            let mut row = Row::new(config, &preds);
            let mut overall = Tally::default();
            let mut groups: BTreeMap<&str, BTreeMap<String, Tally>> = BTreeMap::new();
            for p in &preds {
                let Some(item) = by_id.get(p.id.as_str()) else {
                    continue;
                };
                let ok = string_match(&item.answer, &p.prediction, &item.choices);
                overall.add(ok);
                for (group, value) in [
                    ("task", &item.task),
                    ("difficulty", &item.difficulty),
                    ("category", &item.category),
                    ("sub-category", &item.sub_category),
                ] {
                    if let Some(v) = value {
                        groups
                            .entry(group)
                            .or_default()
                            .entry(v.clone())
                            .or_default()
                            .add(ok);
                    }
                }
            }
            row.metrics.insert("accuracy".to_string(), overall.rate());
            row.groups = groups
                .into_iter()
                .map(|(g, m)| {
                    (
                        g.to_string(),
                        m.into_iter().map(|(k, t)| (k, t.rate())).collect(),
                    )
                })
                .collect();
            row
        })
        .collect()
}

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    right: usize,
    total: usize,
}

impl Tally {
    fn add(&mut self, ok: bool) {
        self.right += usize::from(ok);
        self.total += 1;
    }

    fn rate(self) -> f64 {
        if self.total == 0 {
            return f64::NAN;
        }
        super::sweep::round(self.right as f64 / self.total as f64, 6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choices(c: &[&str]) -> Vec<String> {
        c.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exact_and_case_insensitive_answers_match() {
        let c = choices(&["Dog barking", "Cat meowing", "Car horn"]);
        assert!(string_match("Dog barking", "dog barking", &c));
        assert!(string_match(
            "Dog barking",
            "The answer is: Dog Barking.",
            &c
        ));
        assert!(!string_match("Dog barking", "Cat meowing", &c));
    }

    #[test]
    fn an_answer_sharing_words_with_another_choice() {
        // "guitar" is in both the answer and a wrong choice: it does not count against the
        // prediction, but "electric" (only in the wrong choice) does.
        let c = choices(&["acoustic guitar", "electric guitar", "piano"]);
        assert!(string_match("acoustic guitar", "acoustic guitar", &c));
        assert!(!string_match("acoustic guitar", "electric guitar", &c));
        assert!(
            !string_match("acoustic guitar", "guitar", &c),
            "misses 'acoustic'"
        );
        // The wrong choice's words are all in the answer: only missing answer words fail.
        let c = choices(&["man speaking", "man"]);
        assert!(string_match("man speaking", "a man speaking", &c));
        assert!(
            !string_match("man", "man speaking", &c),
            "'speaking' is a wrong word"
        );
    }

    #[test]
    fn a_verbose_prediction_naming_two_options_is_wrong() {
        let c = choices(&["dog", "cat", "bird"]);
        assert!(!string_match("dog", "It is either a dog or a cat.", &c));
        assert!(string_match("dog", "It is a dog.", &c));
    }

    #[test]
    fn an_empty_prediction_is_wrong() {
        let c = choices(&["dog", "cat"]);
        assert!(!string_match("dog", "", &c));
        assert!(!string_match("dog", "  ...  ", &c), "no word characters");
    }

    #[test]
    fn a_choice_with_the_answers_words_is_not_a_wrong_choice() {
        // Python's set comparison: the same words in another order are the answer.
        let c = choices(&["high pitch", "pitch high", "low pitch"]);
        assert!(string_match("high pitch", "pitch high", &c));
        assert!(!string_match("high pitch", "low", &c));
    }

    #[test]
    fn prompt_template_fills_question_and_choices_once() {
        let item = MmauItem {
            id: "1".into(),
            audio_id: "a.wav".into(),
            question: "Which {choices} animal?".into(),
            choices: choices(&["dog", "cat"]),
            answer: "dog".into(),
            task: None,
            category: None,
            sub_category: None,
            difficulty: None,
        };
        assert_eq!(
            render_prompt(DEFAULT_TEMPLATE, &item),
            "Which {choices} animal? Select one option from the provided choices.\ndog\ncat"
        );
        assert_eq!(
            render_prompt("{x} {question}", &item),
            "{x} Which {choices} animal?"
        );
    }
}
