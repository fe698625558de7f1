//! The `process.Process/Start` stream (`process.proto`): the request and events in proto3 JSON, and reading
//! an open stream event by event.

use base64::Engine;
use domain::ports::SandboxError;
use futures::StreamExt;
use reqwest::Response;
use serde::{Deserialize, Serialize};

use crate::connect::{Decoder, Frame};
use crate::error::from_reqwest;

/// `StartRequest` in `process.proto`, in proto3 JSON.
#[derive(Debug, Serialize)]
pub(crate) struct StartRequest<'a> {
    pub process: ProcessConfig<'a>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ProcessConfig<'a> {
    pub cmd: &'static str,
    pub args: [&'a str; 3],
    pub envs: &'a std::collections::BTreeMap<String, String>,
    pub cwd: String,
}

/// `StartResponse` in `process.proto`.
#[derive(Debug, Deserialize)]
struct StartResponse {
    #[serde(default)]
    event: Option<ProcessEvent>,
}

/// `ProcessEvent`: one of start, data, end, keepalive.
#[derive(Debug, Default, Deserialize)]
struct ProcessEvent {
    #[serde(default)]
    start: Option<StartEvent>,
    #[serde(default)]
    data: Option<DataEvent>,
    #[serde(default)]
    end: Option<EndEvent>,
}

#[derive(Debug, Deserialize)]
struct StartEvent {
    // proto3 JSON leaves out zero values, so a missing pid is 0.
    #[serde(default)]
    pid: u32,
}

#[derive(Debug, Deserialize)]
struct DataEvent {
    #[serde(default)]
    stdout: Option<String>,
    #[serde(default)]
    stderr: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EndEvent {
    #[serde(default, alias = "exit_code")]
    exit_code: Option<i32>,
    #[serde(default)]
    exited: bool,
    /// Set by envd when the process did not end well ("exit status 1", "signal: killed").
    #[serde(default)]
    error: Option<String>,
}

/// What a process stream carries, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    Started {
        pid: u32,
    },
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Ended {
        exit_code: i32,
        error: Option<String>,
    },
    KeepAlive,
}

impl Event {
    fn decode(message: &[u8]) -> Result<Self, SandboxError> {
        let resp: StartResponse = serde_json::from_slice(message)
            .map_err(|e| SandboxError::Provider(format!("malformed process event: {e}")))?;
        let event = resp.event.unwrap_or_default();
        if let Some(start) = event.start {
            return Ok(Event::Started { pid: start.pid });
        }
        if let Some(end) = event.end {
            // A process that did not exit (killed by a signal) reports no exit code of its own.
            let fallback = if end.exited { 0 } else { -1 };
            return Ok(Event::Ended {
                exit_code: end.exit_code.unwrap_or(fallback),
                error: end.error,
            });
        }
        if let Some(data) = event.data {
            let b64 = base64::engine::general_purpose::STANDARD;
            if let Some(out) = data.stdout {
                return b64
                    .decode(out)
                    .map(Event::Stdout)
                    .map_err(|e| SandboxError::Provider(format!("bad stdout bytes: {e}")));
            }
            if let Some(err) = data.stderr {
                return b64
                    .decode(err)
                    .map(Event::Stderr)
                    .map_err(|e| SandboxError::Provider(format!("bad stderr bytes: {e}")));
            }
        }
        Ok(Event::KeepAlive)
    }
}

/// An open `Process/Start` stream.
pub(crate) struct ProcessStream {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    decoder: Decoder,
    done: bool,
}

impl ProcessStream {
    pub(crate) fn new(resp: Response) -> Self {
        Self {
            body: resp.bytes_stream().boxed(),
            decoder: Decoder::new(),
            done: false,
        }
    }

    /// The next event; `None` once the stream ended cleanly; the mapped error when it ended with one.
    pub async fn next_event(&mut self) -> Result<Option<Event>, SandboxError> {
        loop {
            if self.done {
                return Ok(None);
            }
            match self.decoder.next_frame()? {
                Some(Frame::Message(message)) => return Event::decode(&message).map(Some),
                Some(Frame::End(result)) => {
                    self.done = true;
                    return result.map(|()| None);
                }
                None => {}
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.decoder.push(&chunk),
                Some(Err(e)) => return Err(from_reqwest(&e).error),
                None => {
                    self.done = true;
                    return Err(SandboxError::Unavailable(
                        "process stream ended without its end-of-stream message".into(),
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_decode_from_proto3_json() {
        assert_eq!(
            Event::decode(br#"{"event":{"start":{"pid":42}}}"#).unwrap(),
            Event::Started { pid: 42 }
        );
        assert_eq!(
            Event::decode(br#"{"event":{"data":{"stdout":"aGk="}}}"#).unwrap(),
            Event::Stdout(b"hi".to_vec())
        );
        assert_eq!(
            Event::decode(br#"{"event":{"data":{"stderr":"aGk="}}}"#).unwrap(),
            Event::Stderr(b"hi".to_vec())
        );
        // A zero exit code is left out by proto3 JSON.
        assert_eq!(
            Event::decode(br#"{"event":{"end":{"exited":true,"status":"exit status 0"}}}"#)
                .unwrap(),
            Event::Ended {
                exit_code: 0,
                error: None
            }
        );
        assert_eq!(
            Event::decode(
                br#"{"event":{"end":{"exitCode":3,"exited":true,"error":"exit status 3"}}}"#
            )
            .unwrap(),
            Event::Ended {
                exit_code: 3,
                error: Some("exit status 3".into())
            }
        );
        assert_eq!(
            Event::decode(br#"{"event":{"end":{"exited":false,"status":"signal: killed"}}}"#)
                .unwrap(),
            Event::Ended {
                exit_code: -1,
                error: None
            }
        );
        assert_eq!(
            Event::decode(br#"{"event":{"keepalive":{}}}"#).unwrap(),
            Event::KeepAlive
        );
    }
}
