//! The one config error type of the three binaries: which file, where in it, and what is
//! wrong. It keeps the position the TOML parser reports (a byte span, converted to line and
//! column), so `--check` can print the line with a caret under the problem
//! ([`ConfigError::render`]) while the journal gets one line (`Display`).
//! It must never hold the text of a secret: only the one offending line of a config file.

use std::fmt;
use std::path::PathBuf;

/// A position in a config file: 1-based line and column (in characters), the line's text and
/// how many characters the problem spans on it (at least 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
    /// The whole line, without its newline.
    pub text: String,
    /// Characters to underline from `column`, at least 1, never past the end of the line.
    pub width: usize,
}

impl Location {
    /// The location of the byte range `span` in `source`; `None` when the span does not fall
    /// on character boundaries inside `source`.
    pub fn of_span(source: &str, span: std::ops::Range<usize>) -> Option<Self> {
        let start = span.start.min(source.len());
        if !source.is_char_boundary(start) {
            return None;
        }
        let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = source[start..]
            .find('\n')
            .map_or(source.len(), |i| start + i);
        let text = source[line_start..line_end].trim_end_matches('\r');
        let line = source[..start].matches('\n').count() + 1;
        let column = source[line_start..start].chars().count() + 1;
        // Underline within the line's own text (a CRLF's `\r` is not part of it).
        let end = span.end.clamp(start, (line_start + text.len()).max(start));
        let width = source
            .get(start..end)
            .map_or(1, |s| s.chars().count())
            .max(1);
        // The quoted line goes to a terminal: control characters (an ESC, a lone CR) become
        // `?`, one character for one, so the caret still lines up; tabs stay.
        let text = text
            .chars()
            .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
            .collect();
        Some(Self {
            line,
            column,
            text,
            width,
        })
    }
}

/// The byte span of the value at `field` (its path of keys: `["rate_limit", "burst"]`) in the
/// TOML `source`: `None` when the source does not parse or does not set that field (a
/// default value).
pub fn field_span(source: &str, field: &[&str]) -> Option<std::ops::Range<usize>> {
    let doc = toml::de::DeTable::parse(source).ok()?;
    let mut table = doc.get_ref();
    let mut parts = field.iter().copied().peekable();
    loop {
        let part = parts.next()?;
        let (_, value) = table.iter().find(|(k, _)| k.get_ref().as_ref() == part)?;
        if parts.peek().is_none() {
            return Some(value.span());
        }
        match value.get_ref() {
            toml::de::DeValue::Table(t) => table = t,
            _ => return None,
        }
    }
}

/// What is wrong with a config file.
#[derive(Debug)]
pub enum ConfigProblem {
    /// open(2)/read(2) failed, or the file is larger than the binary reads.
    Read(std::io::Error),
    /// Not valid TOML, or a value of the wrong type or an unknown field (serde's message).
    Syntax(String),
    /// A field holds a value the binary refuses; `field` is its dotted name
    /// (`commands.hello.timeout`), `message` says why and how to fix it.
    Invalid {
        /// The dotted field name.
        field: String,
        /// Why the value is refused and what to write instead.
        message: String,
    },
}

/// A config file error: the file, the position when known, the problem.
#[derive(Debug)]
pub struct ConfigError {
    /// The config file.
    pub path: PathBuf,
    /// Where in the file, when the parser or the field's span tells.
    pub location: Option<Location>,
    /// What is wrong.
    pub problem: ConfigProblem,
}

impl ConfigError {
    /// The file could not be read.
    pub fn read(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self {
            path: path.into(),
            location: None,
            problem: ConfigProblem::Read(source),
        }
    }

    /// A TOML or serde error from parsing `source`, with its position when it has a span.
    pub fn syntax(
        path: impl Into<PathBuf>,
        source: &str,
        message: &str,
        span: Option<std::ops::Range<usize>>,
    ) -> Self {
        Self {
            path: path.into(),
            location: span.and_then(|s| Location::of_span(source, s)),
            problem: ConfigProblem::Syntax(message.trim_end().to_owned()),
        }
    }

    /// A refused value of `field`, without a position.
    pub fn invalid(
        path: impl Into<PathBuf>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            path: path.into(),
            location: None,
            problem: ConfigProblem::Invalid {
                field: field.into(),
                message: message.into(),
            },
        }
    }

    /// A refused value of the field at `field` (its path of keys: `["commands", "hello"]`, a
    /// key may hold a dot), named joined with `.` and placed on that field's value in the TOML
    /// `source` when the file sets it ([`field_span`]), so `--check` shows its line with a caret.
    pub fn invalid_in(
        path: impl Into<PathBuf>,
        source: &str,
        field: &[&str],
        message: impl Into<String>,
    ) -> Self {
        let e = Self::invalid(path, field.join("."), message);
        match field_span(source, field) {
            Some(span) => e.at(source, span),
            None => e,
        }
    }

    /// The same error, placed at the byte range `span` of `source` (a `toml::Spanned`
    /// field's span).
    pub fn at(mut self, source: &str, span: std::ops::Range<usize>) -> Self {
        self.location = Location::of_span(source, span);
        self
    }

    /// The `--check` form: the one-line message, then, when the position is known, the line
    /// with a caret under the problem:
    ///
    /// ```text
    /// config /etc/ruroco/server.toml:3:10: invalid type: string "x", expected a duration
    ///   3 | max_age = "x"
    ///     |           ^^^
    /// ```
    pub fn render(&self) -> String {
        let mut out = self.to_string();
        if let Some(loc) = &self.location {
            let number = loc.line.to_string();
            let pad = " ".repeat(number.len());
            out.push_str(&format!("\n  {number} | {}", loc.text));
            // Tabs stay tabs under the line, so the caret lines up however wide they show.
            let indent: String = (loc.text.chars())
                .take(loc.column.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            out.push_str(&format!("\n  {pad} | {indent}{}", "^".repeat(loc.width)));
        }
        out
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config {}", self.path.display())?;
        if let Some(loc) = &self.location {
            write!(f, ":{}:{}", loc.line, loc.column)?;
        }
        match &self.problem {
            ConfigProblem::Syntax(m) => write!(f, ": {}", one_line(m)),
            ConfigProblem::Invalid { field, message } => {
                write!(f, ": field `{}`: {}", escaped(field), one_line(message))
            }
            ConfigProblem::Read(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write!(
                    f,
                    ": cannot read: {e} (pass another file with --config PATH)"
                )
            }
            ConfigProblem::Read(e) => write!(f, ": cannot read: {e}"),
        }
    }
}

/// `s` on one line: whitespace runs (a parser's multi-line message) become one space, other
/// control characters (from a quoted key of the file, say) their escape ([`escaped`]).
fn one_line(s: &str) -> String {
    escaped(&s.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// `s` with every control character written as its escape (`\n`, `\u{1b}`): a field name
/// keeps what it holds, on one line.
fn escaped(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.problem {
            ConfigProblem::Read(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_becomes_line_column_and_a_caret_under_the_problem() {
        let src = "a = 1\nmax_age = \"x\"\n";
        let start = src.find("\"x\"").unwrap();
        let e = ConfigError::syntax("/etc/r.toml", src, "bad duration\n", Some(start..start + 3));
        assert_eq!(e.to_string(), "config /etc/r.toml:2:11: bad duration");
        assert_eq!(
            e.render(),
            "config /etc/r.toml:2:11: bad duration\n  2 | max_age = \"x\"\n    |           ^^^"
        );
    }

    #[test]
    fn a_refused_value_is_placed_on_its_field() {
        let src =
            "[rate_limit]\nburst = 0\n\n[commands]\nhello = { run = \"x\", timeout = \"0s\" }\n";
        let e = ConfigError::invalid_in("/c", src, &["rate_limit", "burst"], "must be at least 1");
        assert_eq!(
            e.render(),
            "config /c:2:9: field `rate_limit.burst`: must be at least 1\n  2 | burst = 0\n    |         ^"
        );
        let e = ConfigError::invalid_in("/c", src, &["commands", "hello", "timeout"], "zero");
        let at = e.location.as_ref().unwrap();
        assert_eq!((at.line, at.column, at.width), (5, 32, 4));
        // A field the file does not hold (a default), or a source that does not parse: no place.
        assert!(
            ConfigError::invalid_in("/c", src, &["rate_limit", "global"], "x")
                .location
                .is_none()
        );
        assert!(
            ConfigError::invalid_in("/c", "= broken", &["a"], "x")
                .location
                .is_none()
        );
        // A command named "x.run" is placed on its own line, not on x's run.
        let src = "[commands]\nx = { run = \"echo\" }\n\"x.run\" = { run = \"  \" }\n";
        let e = ConfigError::invalid_in("/c", src, &["commands", "x.run"], "run is empty");
        assert_eq!(
            e.location.as_ref().map(|l| l.line),
            Some(3),
            "{}",
            e.render()
        );
    }

    #[test]
    fn the_message_is_one_line_and_the_quoted_line_has_no_control_characters() {
        let e = ConfigError::invalid("/c", "commands.a\nSTOPPING=1", "run is\nempty");
        assert_eq!(
            e.to_string(),
            "config /c: field `commands.a\\nSTOPPING=1`: run is empty"
        );
        let src = "ips = [\r\n \"0.0.0.0\"]\r\nx = \"\u{1b}[2J\"\r\n";
        let at = Location::of_span(src, 6..src.find(']').unwrap() + 1).unwrap();
        assert_eq!(
            (at.text.as_str(), at.width),
            ("ips = [", 1),
            "the CR is not underlined"
        );
        let esc = src.find('\u{1b}').unwrap();
        assert_eq!(
            Location::of_span(src, esc..esc + 1).unwrap().text,
            "x = \"?[2J\""
        );
    }

    #[test]
    fn the_caret_lines_up_under_tabs() {
        let src = "\tmax_age = 5\n";
        let start = src.find('5').unwrap();
        let e = ConfigError::syntax("/c", src, "bad", Some(start..start + 1));
        assert_eq!(
            e.render(),
            "config /c:1:12: bad\n  1 | \tmax_age = 5\n    | \t          ^"
        );
    }

    #[test]
    fn spans_past_the_end_or_inside_a_character_give_no_location_not_a_panic() {
        let src = "é = 1";
        assert_eq!(Location::of_span(src, 1..2), None);
        let end = Location::of_span(src, 100..200).unwrap();
        assert_eq!((end.line, end.width), (1, 1));
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        let e = ConfigError::read("/c", missing);
        assert!(
            e.to_string()
                .ends_with("(pass another file with --config PATH)"),
            "{e}"
        );
        let e = ConfigError::invalid("/c", "x", "no");
        assert_eq!(e.render(), "config /c: field `x`: no");
    }
}
