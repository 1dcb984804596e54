//! Stop strings over streamed text (OpenAI's `stop`, transformers' `stop_strings`).

/// Scans the text of one sequence, piece by piece, for the first of a set of stop strings.
///
/// Text that could still be the start of a stop string is held back, so a caller that sends
/// what [`StopStrings::push`] returns never sends any part of a stop string; once one appears
/// the text is cut before it and [`StopStrings::hit`] turns true. Pure and tokenizer-free: the
/// caller decodes tokens to text pieces and feeds them in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopStrings {
    stops: Vec<String>,
    /// Bytes of the longest stop string.
    longest: usize,
    /// All text so far (cut at the stop string once one is seen).
    text: String,
    /// Bytes of `text` already returned.
    emitted: usize,
    hit: bool,
}

impl StopStrings {
    /// A scanner for `stops`; empty strings never match (with none left, nothing is held back).
    pub fn new(stops: impl IntoIterator<Item = String>) -> Self {
        let stops: Vec<String> = stops.into_iter().filter(|s| !s.is_empty()).collect();
        Self {
            longest: stops.iter().map(String::len).max().unwrap_or(0),
            stops,
            ..Self::default()
        }
    }

    /// Adds the next piece of text; returns the text now safe to send (possibly empty).
    /// After a hit, pieces are ignored.
    pub fn push(&mut self, piece: &str) -> String {
        if self.hit {
            return String::new();
        }
        self.text.push_str(piece);
        // A stop string not seen before ends at most `longest - 1` bytes before the old end.
        let from = floor_char_boundary(&self.text, self.emitted.saturating_sub(self.longest));
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.text[from..].find(s.as_str()).map(|i| from + i))
            .min();
        let safe = match first {
            Some(at) => {
                self.hit = true;
                self.text.truncate(at);
                at
            }
            None => {
                let held = self.longest.saturating_sub(1);
                floor_char_boundary(&self.text, self.text.len().saturating_sub(held))
                    .max(self.emitted)
            }
        };
        let out = self.text[self.emitted..safe].to_string();
        self.emitted = safe;
        out
    }

    /// The text held back so far, now released (at the end of generation).
    pub fn finish(&mut self) -> String {
        let out = self.text[self.emitted..].to_string();
        self.emitted = self.text.len();
        out
    }

    /// Whether a stop string appeared.
    pub fn hit(&self) -> bool {
        self.hit
    }

    /// All text pushed so far, cut before the stop string once one appeared.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The text, as [`StopStrings::text`].
    pub fn into_text(self) -> String {
        self.text
    }
}

/// The largest char boundary of `s` at or below `at`.
fn floor_char_boundary(s: &str, at: usize) -> usize {
    (0..=at.min(s.len()))
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, Vec<String>, bool) {
        let mut scan = StopStrings::new(stops.iter().map(|s| s.to_string()));
        let mut sent: Vec<String> = pieces.iter().map(|p| scan.push(p)).collect();
        sent.push(scan.finish());
        (scan.text().to_string(), sent, scan.hit())
    }

    #[test]
    fn stop_string_across_pieces_is_cut_and_never_sent() {
        let (text, sent, hit) = run(&["END"], &["hello E", "N", "D more"]);
        assert_eq!(text, "hello ");
        assert!(hit);
        assert_eq!(sent.concat(), "hello ");
        assert!(!sent.iter().any(|s| s.contains('E')));
    }

    #[test]
    fn without_stop_all_text_is_sent() {
        let (text, sent, hit) = run(&["zz"], &["é", "ab", "z", "c"]);
        assert_eq!(text, "éabzc");
        assert_eq!(sent.concat(), "éabzc");
        assert!(!hit);
        let (_, sent, _) = run(&[], &["a", "b"]);
        assert_eq!(sent, ["a", "b", ""]);
    }

    #[test]
    fn earliest_of_several_stops_wins_and_later_pieces_are_ignored() {
        let (text, sent, hit) = run(&["cd", "b"], &["ab", "cd", "more"]);
        assert_eq!(text, "a");
        assert!(hit);
        assert_eq!(sent.concat(), "a");
        // Multi-byte text around a multi-byte stop string.
        let (text, sent, hit) = run(&["éé"], &["aé", "é", "b"]);
        assert_eq!((text.as_str(), hit), ("a", true));
        assert_eq!(sent.concat(), "a");
    }

    #[test]
    fn empty_stop_strings_are_ignored() {
        let (text, sent, hit) = run(&[""], &["ab"]);
        assert_eq!((text.as_str(), hit), ("ab", false));
        assert_eq!(sent, ["ab", ""]);
    }
}
