//! A build's log: the lines the sandbox printed and the pipeline's own, as the front end's log panel shows
//! them. Text is made safe before it is stored ([`clean_line`]): control characters and ANSI escapes
//! stripped, credentials redacted, length capped.

use std::fmt;

use chrono::{DateTime, Utc};

/// Longest line kept, in characters; the rest is cut and marked.
pub const MAX_LINE_CHARS: usize = 2000;
/// What replaces a credential.
pub const REDACTED: &str = "[REDACTED]";

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSource {
    Stdout,
    Stderr,
    /// The pipeline's own steps (`--- Starting generation pipeline ---`, stages, the failure reason).
    System,
}

impl LogSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
            Self::System => "system",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "stdout" => Some(Self::Stdout),
            "stderr" => Some(Self::Stderr),
            "system" => Some(Self::System),
            _ => None,
        }
    }
}

/// A line's id: its place in the job's log, `<ms>-<seq>` as a Redis stream spells it, kept in the archive
/// too, so one cursor pages and resumes across both. Ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogLineId {
    pub ms: u64,
    pub seq: u64,
}

impl LogLineId {
    /// Parses `<ms>-<seq>`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        let (ms, seq) = s.split_once('-')?;
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return None;
        }
        Some(Self {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl fmt::Display for LogLineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// A line as written, before it has an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLogLine {
    pub ts: DateTime<Utc>,
    pub source: LogSource,
    /// Already cleaned ([`clean_line`]).
    pub text: String,
    /// The build stage it was printed in (`starting`, `scaffold`, `deps`, `checks`, …).
    pub phase: String,
}

/// A stored line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub id: LogLineId,
    pub ts: DateTime<Utc>,
    pub source: LogSource,
    pub text: String,
    pub phase: String,
}

/// The end of a job's log, written after its last line: the job's terminal status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEnd {
    pub status: String,
}

/// One entry of a live log: a line, or the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEntry {
    Line(LogLine),
    End { id: LogLineId, end: LogEnd },
}

impl LogEntry {
    pub fn id(&self) -> LogLineId {
        match self {
            Self::Line(l) => l.id,
            Self::End { id, .. } => *id,
        }
    }
}

/// Makes raw output safe to store and show: keeps what a terminal would show after the last carriage
/// return (progress bars), strips ANSI escape sequences and control characters (a tab becomes a space),
/// redacts credentials (`secrets` verbatim, and what looks like one: see [`redact`]) and caps the length.
pub fn clean_line(raw: &str, secrets: &[String]) -> String {
    let raw = raw.trim_end_matches(['\n', '\r']);
    let raw = raw.rsplit('\r').next().unwrap_or(raw);
    let stripped = strip_controls(raw);
    let redacted = redact(&stripped, secrets);
    cap(redacted)
}

fn strip_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.peek() {
                // CSI: ESC [ parameters intermediates final (0x40..=0x7e).
                Some('[') => {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC: ESC ] … BEL or ESC \.
                Some(']') => {
                    chars.next();
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == '\u{1b}' && chars.peek() == Some(&'\\') {
                            chars.next();
                            break;
                        }
                    }
                }
                Some(_) => {
                    chars.next();
                }
                None => {}
            },
            '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Key names whose value is a credential (`KEY=value`, `key: value`, `"key":"value"`).
const SECRET_KEYS: [&str; 8] = [
    "api_key",
    "apikey",
    "api-key",
    "secret",
    "token",
    "password",
    "passwd",
    "authorization",
];
/// Prefixes of tokens that are credentials by their shape.
const SECRET_PREFIXES: [&str; 6] = ["e2b_", "sk-", "sk_live_", "pk_live_", "ghp_", "AKIA"];
/// URL schemes whose URLs carry credentials.
const SECRET_SCHEMES: [&str; 6] = [
    "postgres://",
    "postgresql://",
    "redis://",
    "rediss://",
    "mongodb://",
    "mongodb+srv://",
];

/// Redacts `secrets` (each given value, wherever it appears; values shorter than 6 characters are too
/// common to be told apart and are left) and what looks like a credential: the value after a secret-named
/// key (`E2B_API_KEY=…`, `Authorization: Bearer …`, `"token": "…"`), tokens shaped like API keys
/// (`e2b_…`, `sk-…`, `ghp_…`, `AKIA…`, 16 characters or more) and database URLs.
pub fn redact(s: &str, secrets: &[String]) -> String {
    let mut out = s.to_owned();
    for secret in secrets.iter().filter(|v| v.chars().count() >= 6) {
        out = out.replace(secret.as_str(), REDACTED);
    }
    let mut result = String::with_capacity(out.len());
    let mut rest_is_secret = false;
    for (i, word) in out.split(' ').enumerate() {
        if i > 0 {
            result.push(' ');
        }
        if rest_is_secret {
            if !word.is_empty() {
                result.push_str(REDACTED);
                // `Bearer <token>`: one redaction for the scheme and the token.
                rest_is_secret =
                    word.eq_ignore_ascii_case("bearer") || word.eq_ignore_ascii_case("basic");
            }
            continue;
        }
        let (redacted, value_follows) = redact_word(word);
        result.push_str(&redacted);
        rest_is_secret = value_follows;
    }
    result
}

/// One space-separated word: `(its redacted form, whether the next word is a secret value)`.
fn redact_word(word: &str) -> (String, bool) {
    let bare = word.trim_matches(|c: char| matches!(c, '"' | '\'' | ',' | '{' | '}' | '(' | ')'));
    if SECRET_SCHEMES
        .iter()
        .any(|scheme| bare.to_ascii_lowercase().starts_with(scheme))
    {
        return (REDACTED.to_owned(), false);
    }
    if bare.chars().count() >= 16 && SECRET_PREFIXES.iter().any(|p| bare.starts_with(p)) {
        return (REDACTED.to_owned(), false);
    }
    // key=value / key:value in one word.
    if let Some(at) = word.find(['=', ':']) {
        let (key, value) = word.split_at(at);
        if is_secret_key(key) {
            let value = &value[1..];
            let value = value.trim_start_matches(['"', '\'']);
            return if value.is_empty() {
                // `key: value` with the value in the next word.
                (word.to_owned(), true)
            } else {
                (format!("{key}{}{REDACTED}", &word[at..=at]), false)
            };
        }
    }
    (word.to_owned(), false)
}

fn is_secret_key(key: &str) -> bool {
    let key = key
        .trim_matches(|c: char| matches!(c, '"' | '\'' | '{' | ' '))
        .to_ascii_lowercase();
    !key.is_empty()
        && SECRET_KEYS
            .iter()
            .any(|k| key.ends_with(k) || key.contains(k))
}

fn cap(s: String) -> String {
    match s.char_indices().nth(MAX_LINE_CHARS) {
        Some((at, _)) => format!("{}… [truncated]", &s[..at]),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_controls_are_stripped_and_progress_keeps_its_last_state() {
        assert_eq!(
            clean_line("\u{1b}[32madded\u{1b}[0m 5 packages\u{7}\n", &[]),
            "added 5 packages"
        );
        assert_eq!(clean_line("10%\r50%\r100% done", &[]), "100% done");
        assert_eq!(clean_line("a\tb\u{0}c", &[]), "a bc");
        assert_eq!(clean_line("\u{1b}]0;title\u{7}visible", &[]), "visible");
    }

    #[test]
    fn credentials_are_redacted() {
        let key = "e2b_0123456789abcdef0123";
        assert_eq!(
            clean_line(&format!("using {key} now"), &[]),
            "using [REDACTED] now"
        );
        assert_eq!(
            clean_line("E2B_API_KEY=abcdefgh12345678", &[]),
            "E2B_API_KEY=[REDACTED]"
        );
        assert_eq!(
            clean_line("Authorization: Bearer abc.def.ghi rest", &[]),
            "Authorization: [REDACTED] [REDACTED] rest"
        );
        assert_eq!(
            clean_line("X-Access-Token: 0123456789", &[]),
            "X-Access-Token: [REDACTED]"
        );
        assert_eq!(
            clean_line("db at postgres://u:pw@h/db ok", &[]),
            "db at [REDACTED] ok"
        );
        assert_eq!(
            clean_line(r#"{"token":"s3cr3t-value"}"#, &[]),
            r#"{"token":[REDACTED]"#
        );
        assert_eq!(
            clean_line("port is hunter22", &["hunter22".to_owned()]),
            "port is [REDACTED]"
        );
        assert_eq!(
            clean_line("listening on 3000", &["3000".to_owned()]),
            "listening on 3000"
        );
    }

    #[test]
    fn long_lines_are_capped() {
        let long = "x".repeat(MAX_LINE_CHARS + 10);
        let cut = clean_line(&long, &[]);
        assert!(cut.starts_with(&"x".repeat(MAX_LINE_CHARS)));
        assert!(cut.ends_with("[truncated]"));
        assert_eq!(
            cut.chars().count(),
            MAX_LINE_CHARS + "… [truncated]".chars().count()
        );
    }

    #[test]
    fn line_ids_parse_and_order() {
        let a = LogLineId::parse("1700000000000-0").unwrap();
        let b = LogLineId::parse("1700000000000-1").unwrap();
        assert!(a < b);
        assert_eq!(a.to_string(), "1700000000000-0");
        for bad in ["", "1-", "-1", "a-1", "1", "1-2-3", "+", "$"] {
            assert_eq!(LogLineId::parse(bad), None, "{bad}");
        }
    }
}
