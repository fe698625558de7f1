//! A small Server-Sent Events client for the tests.

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

/// Reads Server-Sent Events from a response: `data` payloads as JSON, and comment lines.
pub struct SseReader {
    stream: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

#[derive(Debug)]
pub enum SseItem {
    Data(Value),
    Comment(String),
    End,
}

impl SseReader {
    pub fn new(resp: reqwest::Response) -> Self {
        Self {
            stream: resp.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    /// The next event or comment, or `End` when the server closed the stream.
    pub async fn next(&mut self, within: Duration) -> SseItem {
        loop {
            if let Some(pos) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..pos + 2).collect();
                let mut data = String::new();
                let mut comment = None;
                for line in block.lines() {
                    if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                    } else if let Some(c) = line.strip_prefix(':') {
                        comment = Some(c.trim().to_owned());
                    }
                }
                if !data.is_empty() {
                    return SseItem::Data(serde_json::from_str(&data).expect("event JSON"));
                }
                if let Some(c) = comment {
                    return SseItem::Comment(c);
                }
                continue;
            }
            match tokio::time::timeout(within, self.stream.next()).await {
                Err(_) => panic!("no SSE item within {within:?}"),
                Ok(None) => return SseItem::End,
                Ok(Some(chunk)) => {
                    let chunk = chunk.expect("stream chunk");
                    self.buffer.push_str(&String::from_utf8_lossy(&chunk));
                }
            }
        }
    }

    pub async fn next_data(&mut self, within: Duration) -> Value {
        loop {
            match self.next(within).await {
                SseItem::Data(v) => return v,
                SseItem::Comment(_) => continue,
                SseItem::End => panic!("stream ended before the expected event"),
            }
        }
    }
}
