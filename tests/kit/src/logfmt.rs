//! Reading the daemons' logfmt lines and `STATUS=` texts (SPEC "Logging", "Notify"): whole
//! `key=value` pairs, never a prefix of another value. It must never parse more than the test
//! asks for: a line that does not match is simply not counted.

use std::collections::BTreeMap;

/// Whether the logfmt log line `line` holds `needle`: a needle of `key=value` pairs must
/// match whole pairs of the line (`event=undo` does not match `event=undone`; `key=` matches
/// any value), any other needle is a substring (for text inside a quoted value).
pub fn line_has(line: &str, needle: &str) -> bool {
    if !needle.contains('=') {
        return line.contains(needle);
    }
    line.match_indices(needle).any(|(i, _)| {
        let before = line[..i].chars().next_back();
        let after = line[i + needle.len()..].chars().next();
        // A needle ending in `=` asks only for the key.
        let edge = |c: char| c == ' ' || c == '"';
        before.is_none_or(edge) && (needle.ends_with('=') || after.is_none_or(edge))
    })
}

/// Whether any line of the logfmt `log` holds `needle` (see [`line_has`]).
pub fn log_has(log: &str, needle: &str) -> bool {
    log.lines().any(|l| line_has(l, needle))
}

/// The lines of `log` whose `event` is `event`, in order.
pub fn events(log: &str, event: &str) -> Vec<String> {
    let needle = format!("event={event}");
    log.lines()
        .filter(|l| line_has(l, &needle))
        .map(str::to_owned)
        .collect()
}

/// Parse a `STATUS=` text of `key=value` words into numbers (non-numeric words are skipped).
pub fn parse_status(text: &str) -> BTreeMap<String, u64> {
    text.split_whitespace()
        .filter_map(|w| {
            let (k, v) = w.split_once('=')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_matches_only_whole_pairs() {
        let l = "level=INFO event=undone cmd=open msg=\"run event=x\"";
        assert!(line_has(l, "event=undone"));
        assert!(!line_has(l, "event=undo"), "a prefix of the value");
        assert!(!line_has(l, "vent=undone"), "a suffix of the key");
        assert!(line_has(l, "cmd=open"), "at the end of the pair list");
        assert!(
            line_has(l, "event=x"),
            "inside a quoted value, up to the quote"
        );
        assert!(line_has(l, "level=INFO"), "at the start of the line");
        assert!(line_has(l, "cmd="), "a key alone matches any value");
        assert!(!line_has(l, "md="));
        assert!(line_has(l, "run event"), "no `=`: a substring");
        assert!(!line_has("", "a=b"));
    }

    #[test]
    fn events_and_log_has_look_at_every_line() {
        let log = "event=a n=1\nevent=ab\nevent=a n=2\n";
        assert_eq!(events(log, "a"), ["event=a n=1", "event=a n=2"]);
        assert!(log_has(log, "n=2"));
        assert!(!log_has(log, "n=3"));
    }

    #[test]
    fn status_keeps_the_numbers_and_skips_the_words() {
        let s = parse_status("received=3 accepted=2 reload=failed bad_tag=0 junk");
        assert_eq!(s.len(), 3);
        assert_eq!((s["received"], s["accepted"], s["bad_tag"]), (3, 2, 0));
    }
}
