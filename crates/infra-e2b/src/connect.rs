//! The Connect protocol's envelope for streaming RPCs with the JSON codec: each message is one byte of flags,
//! a four-byte big-endian length and the JSON message. The last envelope has the end-of-stream flag and holds
//! `{"error": {"code", "message"}?, "metadata": {...}?}`.

use bytes::{Buf, Bytes, BytesMut};
use domain::ports::SandboxError;
use serde::Deserialize;

use crate::error::from_connect_code;

/// The content type of a streaming Connect call with the JSON codec.
pub const CONTENT_TYPE: &str = "application/connect+json";
/// The protocol version header every Connect request carries.
pub const PROTOCOL_VERSION_HEADER: &str = "Connect-Protocol-Version";
/// The deadline the client gives the server, in milliseconds.
pub const TIMEOUT_HEADER: &str = "Connect-Timeout-Ms";

/// A compressed message (we never negotiate compression, so receiving one is an error).
pub const FLAG_COMPRESSED: u8 = 0x01;
/// The end-of-stream envelope.
pub const FLAG_END_STREAM: u8 = 0x02;

/// Envelopes larger than this are refused rather than buffered.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Wraps one message in an envelope.
pub fn encode(flags: u8, message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.extend_from_slice(&[flags]);
    // A message over 4 GiB cannot be framed; we never send one (files go over /files).
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out.freeze()
}

/// One envelope off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Message(Bytes),
    /// The end-of-stream message: `Ok` when the call succeeded, the mapped error otherwise.
    End(Result<(), SandboxError>),
}

/// Splits a byte stream into envelopes, whatever the chunking.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: BytesMut,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes as they arrive.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Whether bytes of an unfinished envelope are buffered.
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty()
    }

    /// The next complete envelope, `None` until one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, SandboxError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let flags = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_MESSAGE_BYTES {
            return Err(SandboxError::Provider(format!(
                "connect envelope of {len} bytes exceeds the limit"
            )));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        self.buf.advance(5);
        let payload = self.buf.split_to(len).freeze();
        if flags & FLAG_COMPRESSED != 0 {
            return Err(SandboxError::Provider(
                "compressed connect envelope without negotiated compression".into(),
            ));
        }
        if flags & FLAG_END_STREAM != 0 {
            return Ok(Some(Frame::End(parse_end_stream(&payload))));
        }
        Ok(Some(Frame::Message(payload)))
    }
}

#[derive(Debug, Deserialize)]
struct EndStream {
    #[serde(default)]
    error: Option<EndStreamError>,
}

#[derive(Debug, Deserialize)]
struct EndStreamError {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

fn parse_end_stream(payload: &[u8]) -> Result<(), SandboxError> {
    if payload.is_empty() {
        return Ok(());
    }
    let end: EndStream = serde_json::from_slice(payload).map_err(|e| {
        SandboxError::Provider(format!("malformed connect end-of-stream message: {e}"))
    })?;
    match end.error {
        None => Ok(()),
        Some(err) => {
            let code = err.code.unwrap_or_else(|| "unknown".to_owned());
            let message = err.message.unwrap_or_else(|| code.clone());
            Err(from_connect_code(&code, message))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_writes_flags_and_big_endian_length() {
        let frame = encode(0, b"{}");
        assert_eq!(&frame[..], &[0, 0, 0, 0, 2, b'{', b'}']);
    }

    #[test]
    fn decoder_reassembles_frames_split_anywhere() {
        let mut wire = Vec::new();
        wire.extend_from_slice(&encode(0, br#"{"a":1}"#));
        wire.extend_from_slice(&encode(0, br#"{"b":2}"#));
        wire.extend_from_slice(&encode(FLAG_END_STREAM, b"{}"));
        for split in 0..wire.len() {
            let mut decoder = Decoder::new();
            let mut frames = Vec::new();
            for chunk in [&wire[..split], &wire[split..]] {
                decoder.push(chunk);
                while let Some(frame) = decoder.next_frame().unwrap() {
                    frames.push(frame);
                }
            }
            assert_eq!(
                frames,
                vec![
                    Frame::Message(Bytes::from_static(br#"{"a":1}"#)),
                    Frame::Message(Bytes::from_static(br#"{"b":2}"#)),
                    Frame::End(Ok(())),
                ],
                "split at {split}"
            );
            assert!(!decoder.has_partial());
        }
    }

    #[test]
    fn end_stream_error_maps_its_code() {
        let mut decoder = Decoder::new();
        decoder.push(&encode(
            FLAG_END_STREAM,
            br#"{"error":{"code":"deadline_exceeded","message":"too slow"}}"#,
        ));
        assert_eq!(
            decoder.next_frame().unwrap(),
            Some(Frame::End(Err(SandboxError::TimedOut("too slow".into()))))
        );
    }

    #[test]
    fn compressed_frames_are_refused() {
        let mut decoder = Decoder::new();
        decoder.push(&encode(FLAG_COMPRESSED, b"xx"));
        assert!(decoder.next_frame().is_err());
    }
}
