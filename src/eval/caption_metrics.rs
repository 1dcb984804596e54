//! Corpus-level captioning metrics: CIDEr-D, BLEU-4 and ROUGE-L, as the `aac-metrics` package
//! (PyPI, version 0.6.0) computes them in `functional/cider_d.py`, `functional/bleu.py` and
//! `functional/rouge_l.py` (themselves ports of coco-caption's `pycocoevalcap`).
//!
//! The functions take token lists; [`tokenize`] is the tokenisation `auris eval captions`
//! applies to candidates and references alike (see its doc). The parity tests feed both sides
//! whitespace-split tokens, which is what the Python functions do when called directly.
//! SPICE and METEOR need Java, FENSE and SPIDEr-FL need model downloads: not computed.

use std::collections::{HashMap, HashSet};

/// One sentence's tokens.
pub(crate) type Tokens = Vec<String>;

/// The caption tokenisation: lower-case; the punctuation coco-caption's PTB tokenizer step
/// removes (`. , ? ! : ; " ( ) [ ] { }`, back-ticks) becomes a space; split on white space;
/// tokens made of punctuation only (`-`, `--`, `'`, `...`) are dropped. Hyphenated words and
/// apostrophes inside words are kept whole, where the Java PTB tokenizer splits clitics
/// ("dog's" -> "dog 's"), so scores can differ slightly from the Java pipeline's.
pub(crate) fn tokenize(text: &str) -> Tokens {
    let cleaned: String =
        text.to_lowercase()
            .chars()
            .map(|c| match c {
                '.' | ',' | '?' | '!' | ':' | ';' | '"' | '(' | ')' | '[' | ']' | '{' | '}'
                | '`' => ' ',
                c => c,
            })
            .collect();
    cleaned
        .split_whitespace()
        .filter(|t| t.chars().any(char::is_alphanumeric))
        .map(str::to_string)
        .collect()
}

/// N-gram counts of orders 1..=n, one map per order, n-grams joined by spaces (tokens never
/// contain white space).
fn ngram_counts(tokens: &[String], n: usize) -> Vec<HashMap<String, usize>> {
    (1..=n)
        .map(|k| {
            let mut counts = HashMap::new();
            for w in tokens.windows(k) {
                *counts.entry(w.join(" ")).or_insert(0) += 1;
            }
            counts
        })
        .collect()
}

/// A sentence's TF-IDF vectors per order, their norms, and its CIDEr "length".
struct TfIdf {
    vec: Vec<HashMap<String, f64>>,
    norm: Vec<f64>,
    length: f64,
}

fn tf_idf(
    counts: &[HashMap<String, usize>],
    df: &[HashMap<String, usize>],
    log_n_refs: f64,
) -> TfIdf {
    let mut vec = Vec::with_capacity(counts.len());
    let mut norm = Vec::with_capacity(counts.len());
    for (order, c) in counts.iter().enumerate() {
        let mut v = HashMap::with_capacity(c.len());
        let mut sq = 0.0;
        for (ngram, &tf) in c {
            let d = df[order].get(ngram).copied().unwrap_or(0).max(1) as f64;
            let w = tf as f64 * (log_n_refs - d.ln());
            sq += w * w;
            v.insert(ngram.clone(), w);
        }
        vec.push(v);
        norm.push(sq.sqrt());
    }
    // coco-caption's `counts2vec` adds the term frequencies of the order with index 1 (the
    // bigrams), not the words; the length penalty uses that, and so do we.
    let length = counts.get(1).map_or(0, |c| c.values().sum::<usize>()) as f64;
    TfIdf { vec, norm, length }
}

fn cider_similarity(cand: &TfIdf, reference: &TfIdf, sigma: f64) -> f64 {
    let delta = cand.length - reference.length;
    let penalty = (-(delta * delta) / (2.0 * sigma * sigma)).exp();
    let mut total = 0.0;
    for order in 0..cand.vec.len() {
        let mut sim = 0.0;
        for (ngram, &c) in &cand.vec[order] {
            let r = reference.vec[order].get(ngram).copied().unwrap_or(0.0);
            sim += c.min(r) * r;
        }
        if cand.norm[order] != 0.0 && reference.norm[order] != 0.0 {
            sim /= cand.norm[order] * reference.norm[order];
        }
        total += sim * penalty;
    }
    total
}

/// Corpus CIDEr-D: n-grams 1..=4, document frequencies over the whole reference set, cosine of
/// TF-IDF vectors with candidate weights clipped by the reference's, a Gaussian length
/// penalty (sigma 6), averaged over references and orders, times 10, mean over the corpus.
/// `aac-metrics` refuses fewer than 2 candidates (the IDF of a single item is zero); this
/// returns 0 for them.
pub(crate) fn cider_d(candidates: &[Tokens], references: &[Vec<Tokens>]) -> f64 {
    const N: usize = 4;
    const SIGMA: f64 = 6.0;
    const SCALE: f64 = 10.0;
    if candidates.is_empty() {
        return 0.0;
    }
    let refs: Vec<Vec<Vec<HashMap<String, usize>>>> = references
        .iter()
        .map(|rs| rs.iter().map(|r| ngram_counts(r, N)).collect())
        .collect();
    let mut df: Vec<HashMap<String, usize>> = vec![HashMap::new(); N];
    for item in &refs {
        for (order, d) in df.iter_mut().enumerate() {
            let seen: HashSet<&String> = item.iter().flat_map(|r| r[order].keys()).collect();
            for ngram in seen {
                *d.entry(ngram.clone()).or_insert(0) += 1;
            }
        }
    }
    let log_n_refs = (refs.len() as f64).ln();
    let mut sum = 0.0;
    for (cand, item) in candidates.iter().zip(&refs) {
        let c = tf_idf(&ngram_counts(cand, N), &df, log_n_refs);
        let total: f64 = item
            .iter()
            .map(|r| cider_similarity(&c, &tf_idf(r, &df, log_n_refs), SIGMA))
            .sum();
        if !item.is_empty() {
            sum += total / N as f64 / item.len() as f64;
        }
    }
    SCALE * sum / candidates.len() as f64
}

/// Corpus BLEU-4 (coco-caption's `BleuScorer` with the "closest" reference length): clipped
/// n-gram matches and candidate n-grams summed over the corpus, geometric mean of the four
/// precisions, brevity penalty from the summed lengths (the closest reference length per
/// candidate, the shorter one on a tie).
pub(crate) fn bleu_4(candidates: &[Tokens], references: &[Vec<Tokens>]) -> f64 {
    const N: usize = 4;
    const SMALL: f64 = 1e-9;
    const TINY: f64 = 1e-15;
    let mut guess = [0usize; N];
    let mut correct = [0usize; N];
    let (mut test_len, mut ref_len) = (0usize, 0usize);
    for (cand, refs) in candidates.iter().zip(references) {
        let mut max_counts: Vec<HashMap<String, usize>> = vec![HashMap::new(); N];
        for r in refs {
            for (order, counts) in ngram_counts(r, N).into_iter().enumerate() {
                for (ngram, c) in counts {
                    let m = max_counts[order].entry(ngram).or_insert(0);
                    *m = (*m).max(c);
                }
            }
        }
        let len = cand.len();
        test_len += len;
        ref_len += refs
            .iter()
            .map(|r| r.len())
            .min_by_key(|&l| (l.abs_diff(len), l))
            .unwrap_or(0);
        for (order, counts) in ngram_counts(cand, N).into_iter().enumerate() {
            guess[order] += (len + 1).saturating_sub(order + 1);
            for (ngram, c) in counts {
                correct[order] += c.min(max_counts[order].get(&ngram).copied().unwrap_or(0));
            }
        }
    }
    let mut product = 1.0;
    for k in 0..N {
        product *= (correct[k] as f64 + TINY) / (guess[k] as f64 + SMALL);
    }
    let mut bleu = product.powf(1.0 / N as f64);
    let ratio = (test_len as f64 + TINY) / (ref_len as f64 + SMALL);
    if ratio < 1.0 {
        bleu *= (1.0 - 1.0 / ratio).exp();
    }
    bleu
}

/// Length of the longest common subsequence of two token lists.
fn lcs(a: &[String], b: &[String]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    let mut cur = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y {
                prev[j] + 1
            } else {
                prev[j + 1].max(cur[j])
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Mean ROUGE-L over the corpus: per candidate, the best LCS precision and the best LCS recall
/// over its references, combined as an F-measure with beta 1.2; an empty candidate scores 0.
pub(crate) fn rouge_l(candidates: &[Tokens], references: &[Vec<Tokens>]) -> f64 {
    const BETA: f64 = 1.2;
    if candidates.is_empty() {
        return 0.0;
    }
    let mut sum = 0.0;
    for (cand, refs) in candidates.iter().zip(references) {
        if cand.is_empty() {
            continue;
        }
        let (mut prec, mut rec) = (0.0f64, 0.0f64);
        for r in refs {
            let l = lcs(r, cand) as f64;
            prec = prec.max(l / cand.len() as f64);
            rec = rec.max(l / r.len() as f64);
        }
        if prec != 0.0 && rec != 0.0 {
            sum += ((1.0 + BETA * BETA) * prec * rec) / (rec + BETA * BETA * prec);
        }
    }
    sum / candidates.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Tokens {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn tokenisation_lowercases_and_drops_punctuation() {
        assert_eq!(
            tokenize("A dog's bark, then \"silence\" -- a high-pitched beep."),
            [
                "a",
                "dog's",
                "bark",
                "then",
                "silence",
                "a",
                "high-pitched",
                "beep"
            ]
        );
        assert!(tokenize(" ... ").is_empty());
    }

    #[test]
    fn identical_captions_get_full_bleu_and_rouge() {
        let c = vec![
            toks("a dog barks loudly outside"),
            toks("rain falls on a roof"),
        ];
        let r = vec![vec![c[0].clone()], vec![c[1].clone()]];
        assert!((bleu_4(&c, &r) - 1.0).abs() < 1e-6);
        assert!((rouge_l(&c, &r) - 1.0).abs() < 1e-12);
        assert!(cider_d(&c, &r) > 0.0);
    }

    /// aac-metrics' own numbers on fixed strings (`scripts/make_caption_metric_fixtures.sh`,
    /// which pins the package): the same whitespace tokens in, the same scores out.
    #[test]
    fn parity_with_aac_metrics() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/eval/caption_metrics.json"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let fixture: serde_json::Value = serde_json::from_str(&text).unwrap();
        let cases = fixture["cases"].as_array().unwrap();
        assert!(cases.len() >= 4);
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let cands: Vec<Tokens> = case["candidates"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| toks(c.as_str().unwrap()))
                .collect();
            let refs: Vec<Vec<Tokens>> = case["references"]
                .as_array()
                .unwrap()
                .iter()
                .map(|rs| {
                    rs.as_array()
                        .unwrap()
                        .iter()
                        .map(|r| toks(r.as_str().unwrap()))
                        .collect()
                })
                .collect();
            for (metric, ours) in [
                ("cider_d", cider_d(&cands, &refs)),
                ("bleu_4", bleu_4(&cands, &refs)),
                ("rouge_l", rouge_l(&cands, &refs)),
            ] {
                let expected = case[metric].as_f64().unwrap();
                assert!(
                    (ours - expected).abs() <= 1e-9 * expected.abs().max(1.0),
                    "{name} {metric}: ours {ours}, aac-metrics {expected}"
                );
            }
        }
    }

    #[test]
    fn lcs_of_hand_worked_sequences() {
        assert_eq!(lcs(&toks("a b c d e"), &toks("a c e")), 3);
        assert_eq!(lcs(&toks("a b"), &toks("c d")), 0);
        assert_eq!(lcs(&toks(""), &toks("a")), 0);
    }
}
