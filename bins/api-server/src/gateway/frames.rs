//! Reading the browser's side of a proxied WebSocket just enough to tell messages from control frames
//! (RFC 6455 §5.2): a text or binary message is activity, a ping, pong or close is not (a socket merely
//! held open must not keep a sandbox awake). The bytes themselves pass through untouched.

/// Follows frame boundaries across reads.
#[derive(Debug, Default)]
pub struct FrameScanner {
    header: [u8; 14],
    have: usize,
    /// Payload bytes of the current frame still to skip.
    remaining: u64,
}

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;

impl FrameScanner {
    /// Feeds bytes the browser sent; answers how many messages (text or binary frames) began in them.
    pub fn scan(&mut self, mut bytes: &[u8]) -> usize {
        let mut messages = 0;
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let skip = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                bytes = &bytes[skip..];
                self.remaining -= skip as u64;
                continue;
            }
            let take = (self.needed() - self.have).min(bytes.len());
            self.header[self.have..self.have + take].copy_from_slice(&bytes[..take]);
            self.have += take;
            bytes = &bytes[take..];
            if self.have < self.needed() {
                continue;
            }
            let opcode = self.header[0] & 0x0f;
            if opcode == TEXT || opcode == BINARY {
                messages += 1;
            }
            self.remaining = self.payload_len();
            self.have = 0;
        }
        messages
    }

    /// Header bytes needed, as far as the bytes already read tell.
    fn needed(&self) -> usize {
        if self.have < 2 {
            return 2;
        }
        let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
        let ext = match self.header[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        2 + ext + mask
    }

    fn payload_len(&self) -> u64 {
        match self.header[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.header[2..10]);
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let key = [1, 2, 3, 4];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        f
    }

    #[test]
    fn messages_count_and_control_frames_do_not() {
        let mut bytes = frame(0x9, b"ping");
        bytes.extend(frame(0xA, b"pong"));
        bytes.extend(frame(TEXT, b"{\"type\":\"custom\"}"));
        bytes.extend(frame(BINARY, &[7; 300]));
        bytes.extend(frame(BINARY, &vec![0; 70_000]));
        bytes.extend(frame(0x8, &[3, 232]));
        assert_eq!(FrameScanner::default().scan(&bytes), 3);
        // Delivered a byte at a time, the count is the same.
        let mut scanner = FrameScanner::default();
        let n: usize = bytes
            .iter()
            .map(|b| scanner.scan(std::slice::from_ref(b)))
            .sum();
        assert_eq!(n, 3);
    }

    #[test]
    fn only_pings_and_pongs_are_no_activity() {
        let mut bytes = Vec::new();
        for _ in 0..50 {
            bytes.extend(frame(0xA, b""));
            bytes.extend(frame(0x9, b"keepalive"));
        }
        assert_eq!(FrameScanner::default().scan(&bytes), 0);
    }
}
