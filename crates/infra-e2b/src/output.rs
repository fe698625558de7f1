//! Turning a command's output bytes into text as they arrive, without splitting a UTF-8 character that
//! straddles two data events.

use domain::ports::{OutputSink, OutputStream};

/// Decodes one stream's bytes incrementally.
#[derive(Debug, Default)]
struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// The text decodable so far; an incomplete trailing character waits for the next chunk.
    fn push(&mut self, chunk: &[u8]) -> String {
        self.pending.extend_from_slice(chunk);
        let keep = match std::str::from_utf8(&self.pending) {
            Ok(_) => 0,
            // An incomplete character at the end (no error length) is kept for the next chunk.
            Err(e) if e.error_len().is_none() => self.pending.len() - e.valid_up_to(),
            Err(_) => 0,
        };
        let tail = self.pending.split_off(self.pending.len() - keep);
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending = tail;
        text
    }

    fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

/// Collects stdout and stderr and forwards each piece to the command's sink.
#[derive(Debug, Default)]
pub(crate) struct OutputCollector {
    sink: Option<OutputSink>,
    stdout: Utf8Stream,
    stderr: Utf8Stream,
    /// Whether to keep the text (foreground commands) or only forward it (background ones).
    retain: bool,
    pub out: String,
    pub err: String,
}

impl OutputCollector {
    pub fn new(sink: Option<OutputSink>, retain: bool) -> Self {
        Self {
            sink,
            retain,
            ..Self::default()
        }
    }

    pub fn push(&mut self, stream: OutputStream, chunk: &[u8]) {
        let text = match stream {
            OutputStream::Stdout => self.stdout.push(chunk),
            OutputStream::Stderr => self.stderr.push(chunk),
        };
        self.emit(stream, text);
    }

    /// Flushes what is left at the end of the stream.
    pub fn finish(&mut self) {
        let out = self.stdout.finish();
        self.emit(OutputStream::Stdout, out);
        let err = self.stderr.finish();
        self.emit(OutputStream::Stderr, err);
    }

    fn emit(&mut self, stream: OutputStream, text: String) {
        if text.is_empty() {
            return;
        }
        if let Some(sink) = &self.sink {
            (sink.0)(stream, &text);
        }
        if self.retain {
            match stream {
                OutputStream::Stdout => self.out.push_str(&text),
                OutputStream::Stderr => self.err.push_str(&text),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_split_across_chunks_are_kept_whole() {
        let bytes = "héllo".as_bytes();
        let mut collector = OutputCollector::new(None, true);
        collector.push(OutputStream::Stdout, &bytes[..2]);
        collector.push(OutputStream::Stdout, &bytes[2..]);
        collector.push(OutputStream::Stderr, b"oops\n");
        collector.finish();
        assert_eq!(collector.out, "héllo");
        assert_eq!(collector.err, "oops\n");
    }
}
