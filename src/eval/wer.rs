//! Word error rate: text normalisation and word-level edit distance.
//!
//! Both the reference and the hypothesis are normalised the same way before comparing:
//! lower case; `-` and `/` separate words; digit groups with thousands commas are joined
//! (`1,000` -> `1000`); `%` reads `percent`; apostrophes are dropped (`don't` -> `dont`); every
//! other character that is not a letter or digit separates words; a word of digits only is
//! spelled out (`21` -> `twenty one`), so "press 1" and "press one" agree.
//!
//! WER = (substitutions + deletions + insertions) / reference words, from the Levenshtein
//! distance over words. A corpus WER sums errors and reference words over all utterances.

/// Normalised words of `text`.
pub(crate) fn normalize(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    let chars: Vec<char> = lower.chars().collect();
    let mut cleaned = String::with_capacity(lower.len());
    for (i, &c) in chars.iter().enumerate() {
        let digit_before = i > 0 && chars[i - 1].is_ascii_digit();
        let digit_after = chars.get(i + 1).is_some_and(|c| c.is_ascii_digit());
        match c {
            ',' if digit_before && digit_after => {}
            '\'' | '\u{2019}' => {}
            '%' => cleaned.push_str(" percent "),
            c if c.is_alphanumeric() => cleaned.push(c),
            _ => cleaned.push(' '),
        }
    }
    let mut words = Vec::new();
    for word in cleaned.split_whitespace() {
        if word.bytes().all(|b| b.is_ascii_digit()) {
            match word.parse::<u64>() {
                Ok(n) if n < 1_000_000_000_000 => {
                    words.extend(number_words(n).split(' ').map(str::to_string))
                }
                _ => words.extend(word.chars().map(|d| digit_word(d).to_string())),
            }
        } else {
            words.push(word.to_string());
        }
    }
    words
}

const ONES: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const TENS: [&str; 10] = [
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];

fn digit_word(d: char) -> &'static str {
    ONES[d.to_digit(10).unwrap_or(0) as usize]
}

/// `n` in English words, `n < 10^12`: `1203` -> `one thousand two hundred three`.
pub(crate) fn number_words(n: u64) -> String {
    fn below_thousand(n: u64, out: &mut Vec<&'static str>) {
        if n >= 100 {
            out.push(ONES[(n / 100) as usize]);
            out.push("hundred");
        }
        let rest = n % 100;
        if rest >= 20 {
            out.push(TENS[(rest / 10) as usize]);
            if !rest.is_multiple_of(10) {
                out.push(ONES[(rest % 10) as usize]);
            }
        } else if rest > 0 || n == 0 {
            out.push(ONES[rest as usize]);
        }
    }
    if n == 0 {
        return "zero".to_string();
    }
    let mut out = Vec::new();
    for (scale, name) in [
        (1_000_000_000, "billion"),
        (1_000_000, "million"),
        (1_000, "thousand"),
    ] {
        if !(n / scale).is_multiple_of(1000) {
            below_thousand(n / scale % 1000, &mut out);
            out.push(name);
        }
    }
    if !n.is_multiple_of(1000) {
        below_thousand(n % 1000, &mut out);
    }
    out.join(" ")
}

/// Word-level Levenshtein distance: the fewest substitutions, deletions and insertions that
/// turn `reference` into `hypothesis`.
pub(crate) fn word_errors<S: AsRef<str>>(reference: &[S], hypothesis: &[S]) -> usize {
    let mut prev: Vec<usize> = (0..=hypothesis.len()).collect();
    let mut cur = vec![0; hypothesis.len() + 1];
    for (i, r) in reference.iter().enumerate() {
        cur[0] = i + 1;
        for (j, h) in hypothesis.iter().enumerate() {
            let substitute = prev[j] + usize::from(r.as_ref() != h.as_ref());
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[hypothesis.len()]
}

/// Errors and reference words accumulated over utterances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ErrorCount {
    /// Word errors (S + D + I).
    pub(crate) errors: usize,
    /// Reference words.
    pub(crate) words: usize,
}

impl ErrorCount {
    /// Normalises both texts and counts the errors of one utterance.
    pub(crate) fn of(reference: &str, hypothesis: &str) -> Self {
        let r = normalize(reference);
        let h = normalize(hypothesis);
        Self {
            errors: word_errors(&r, &h),
            words: r.len(),
        }
    }

    /// Adds another utterance's counts.
    pub(crate) fn add(&mut self, other: Self) {
        self.errors += other.errors;
        self.words += other.words;
    }

    /// The word error rate (0 when there are no reference words and no errors).
    pub(crate) fn rate(&self) -> f64 {
        if self.words == 0 {
            if self.errors == 0 {
                0.0
            } else {
                f64::INFINITY
            }
        } else {
            self.errors as f64 / self.words as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_by_hand() {
        assert_eq!(
            normalize("Please enter your PIN, followed by the pound key."),
            ["please", "enter", "your", "pin", "followed", "by", "the", "pound", "key"]
        );
        assert_eq!(normalize("Don't hang-up!"), ["dont", "hang", "up"]);
        assert_eq!(
            normalize("Press 1 or 21."),
            ["press", "one", "or", "twenty", "one"]
        );
        assert_eq!(
            normalize("1,250 calls at 5%"),
            ["one", "thousand", "two", "hundred", "fifty", "calls", "at", "five", "percent"]
        );
        assert_eq!(normalize("  ...  "), Vec::<String>::new());
        assert_eq!(normalize("Zero."), ["zero"]);
    }

    #[test]
    fn number_words_by_hand() {
        assert_eq!(number_words(0), "zero");
        assert_eq!(number_words(7), "seven");
        assert_eq!(number_words(40), "forty");
        assert_eq!(number_words(115), "one hundred fifteen");
        assert_eq!(number_words(2000), "two thousand");
        assert_eq!(number_words(1_002_003), "one million two thousand three");
    }

    #[test]
    fn edit_distance_by_hand() {
        let w = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        // identical
        assert_eq!(word_errors(&w("a b c"), &w("a b c")), 0);
        // one substitution
        assert_eq!(word_errors(&w("the cat sat"), &w("the bat sat")), 1);
        // one deletion + one insertion
        assert_eq!(word_errors(&w("a b c d"), &w("a c d e")), 2);
        // empty hypothesis: every reference word deleted
        assert_eq!(word_errors(&w("one two three"), &w("")), 3);
        // empty reference: every hypothesis word inserted
        assert_eq!(word_errors(&w(""), &w("x y")), 2);
        // kitten -> sitting over letters as words: 3
        assert_eq!(word_errors(&w("k i t t e n"), &w("s i t t i n g")), 3);
    }

    #[test]
    fn corpus_rate_by_hand() {
        // "he was not an ill disposed young man" (8 words) vs a hypothesis with one
        // substitution (ill -> well) and one deletion (young): 2 errors.
        let a = ErrorCount::of(
            "he was not an ill disposed young man",
            "He was not an well-disposed man.",
        );
        // "well-disposed" splits into two words: substitution ill->well, disposed matches,
        // young deleted: 2 errors over 8 words.
        assert_eq!(
            a,
            ErrorCount {
                errors: 2,
                words: 8
            }
        );
        let b = ErrorCount::of("Thank you.", "thank you");
        assert_eq!(
            b,
            ErrorCount {
                errors: 0,
                words: 2
            }
        );
        let mut total = a;
        total.add(b);
        assert_eq!(total.rate(), 0.2);
        assert_eq!(ErrorCount::default().rate(), 0.0);
    }
}
