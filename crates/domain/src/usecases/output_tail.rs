//! The last lines a command printed, kept while it runs, for the message of a build that fails because of
//! it (a dev server that exits, or never answers).

use std::sync::{Arc, Mutex};

use crate::ports::{OutputSink, OutputStream};

/// How many lines of a command's output a failure message quotes.
pub const TAIL_LINES: usize = 20;
/// Past this many bytes the oldest output is dropped, whatever the lines.
const KEEP_BYTES: usize = 16 * 1024;

/// The last [`TAIL_LINES`] lines of a command's output, fed by [`OutputTail::sink`].
#[derive(Debug, Clone, Default)]
pub struct OutputTail(Arc<Mutex<String>>);

impl OutputTail {
    pub fn new() -> Self {
        Self::default()
    }

    /// A sink that keeps what it is given (both streams, in arrival order).
    pub fn sink(&self) -> OutputSink {
        let kept = Arc::clone(&self.0);
        OutputSink(Arc::new(move |_stream: OutputStream, text: &str| {
            let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
            kept.push_str(text);
            if kept.len() > 2 * KEEP_BYTES {
                let mut cut = kept.len() - KEEP_BYTES;
                while !kept.is_char_boundary(cut) {
                    cut += 1;
                }
                kept.drain(..cut);
            }
        }))
    }

    /// The last lines kept, trimmed.
    pub fn lines(&self) -> String {
        let kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        last_lines(&kept, TAIL_LINES)
    }
}

/// The last `n` non-empty lines of `text`, joined by newlines.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A sink that hands every piece of output to both `a` and `b`.
pub fn tee(a: OutputSink, b: OutputSink) -> OutputSink {
    OutputSink(Arc::new(move |stream, text| {
        (a.0)(stream, text);
        (b.0)(stream, text);
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines_of_both_streams() {
        let tail = OutputTail::new();
        let sink = tail.sink();
        for i in 0..30 {
            (sink.0)(OutputStream::Stdout, &format!("line {i}\n"));
        }
        (sink.0)(OutputStream::Stderr, "Error: boom\n\n");
        let lines = tail.lines();
        assert_eq!(lines.lines().count(), TAIL_LINES);
        assert!(lines.starts_with("line 11"), "{lines}");
        assert!(lines.ends_with("Error: boom"), "{lines}");
    }

    #[test]
    fn memory_stays_bounded() {
        let tail = OutputTail::new();
        let sink = tail.sink();
        let chunk = "é".repeat(1000);
        for _ in 0..200 {
            (sink.0)(OutputStream::Stdout, &chunk);
        }
        assert!(tail.0.lock().unwrap().len() <= 2 * KEEP_BYTES + chunk.len());
    }

    #[test]
    fn tee_feeds_both() {
        let (a, b) = (OutputTail::new(), OutputTail::new());
        let sink = tee(a.sink(), b.sink());
        (sink.0)(OutputStream::Stdout, "hi\n");
        assert_eq!((a.lines(), b.lines()), ("hi".into(), "hi".into()));
    }
}
