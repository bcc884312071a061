//! HTTP/2 by hand: frames, HPACK literals, and a raw connection whose reader
//! notes what the server sent (SETTINGS, GOAWAY, RST_STREAM, response heads).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::task::JoinHandle;

use super::lock;
use crate::support::eventually;

// ---------------------------------------------------------------------------
// HTTP/2 by hand
// ---------------------------------------------------------------------------

/// The client connection preface.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types and flags (RFC 9113 §6).
pub mod frames {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    /// Error codes.
    pub const CANCEL: u32 = 0x8;
}

/// One frame: 9-byte header and payload.
pub fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("frame payload fits");
    assert!(len < 1 << 24, "frame payload over 16 MiB");
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A header block as HEADERS (with END_STREAM) and as many CONTINUATION
/// frames as the default 16 KiB frame size needs, END_HEADERS on the last.
pub fn h2_header_frames(stream: u32, block: &[u8]) -> Vec<u8> {
    let pieces: Vec<&[u8]> = block.chunks(16_384).collect();
    let mut out = Vec::with_capacity(block.len() + 9 * pieces.len());
    for (i, piece) in pieces.iter().enumerate() {
        let end = if i + 1 == pieces.len() {
            frames::END_HEADERS
        } else {
            0
        };
        if i == 0 {
            out.extend(h2_frame(
                frames::HEADERS,
                frames::END_STREAM | end,
                stream,
                piece,
            ));
        } else {
            out.extend(h2_frame(frames::CONTINUATION, end, stream, piece));
        }
    }
    out
}

/// An HPACK integer with an `n`-bit prefix, the high bits of the first byte
/// set to `flags` (RFC 7541 §5.1).
pub fn hpack_int(flags: u8, n: u32, value: usize) -> Vec<u8> {
    let max = (1usize << n) - 1;
    if value < max {
        return vec![flags | value as u8];
    }
    let mut out = vec![flags | max as u8];
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
    out
}

/// An HPACK string literal, not Huffman-coded.
pub fn hpack_str(text: &[u8]) -> Vec<u8> {
    let mut out = hpack_int(0, 7, text.len());
    out.extend_from_slice(text);
    out
}

/// A literal field, new name, not indexed.
pub fn hpack_literal(name: &str, value: &[u8]) -> Vec<u8> {
    let mut out = vec![0x00];
    out.extend(hpack_str(name.as_bytes()));
    out.extend(hpack_str(value));
    out
}

/// A literal field, new name, added to the dynamic table.
pub fn hpack_literal_indexed(name: &str, value: &[u8]) -> Vec<u8> {
    let mut out = vec![0x40];
    out.extend(hpack_str(name.as_bytes()));
    out.extend(hpack_str(value));
    out
}

/// The header block of `METHOD http://authority/path` (static-table names).
pub fn hpack_request(method: &str, authority: &str, path: &str) -> Vec<u8> {
    let mut out = match method {
        "GET" => vec![0x82],
        "POST" => vec![0x83],
        other => {
            let mut m = hpack_int(0x00, 4, 2);
            m.extend(hpack_str(other.as_bytes()));
            m
        }
    };
    out.push(0x86); // :scheme http
    out.extend(hpack_int(0x00, 4, 4)); // :path, literal value
    out.extend(hpack_str(path.as_bytes()));
    out.extend(hpack_int(0x00, 4, 1)); // :authority, literal value
    out.extend(hpack_str(authority.as_bytes()));
    out
}

/// What the server did on a raw HTTP/2 connection.
#[derive(Debug, Default, Clone)]
pub struct H2Seen {
    pub settings: usize,
    pub settings_acks: usize,
    /// GOAWAY error code.
    pub goaway: Option<u32>,
    /// RST_STREAM frames: (stream, error code).
    pub resets: Vec<(u32, u32)>,
    /// Response heads: (stream, status), status 0 when the encoding is not
    /// one this reader decodes.
    pub responses: Vec<(u32, u16)>,
    pub data_bytes: usize,
    pub closed: bool,
}

/// A raw HTTP/2 cleartext connection: the test writes frames, a task reads.
pub struct H2Raw {
    writer: OwnedWriteHalf,
    seen: Arc<Mutex<H2Seen>>,
    reader: JoinHandle<()>,
    /// Bytes written so far.
    pub written: usize,
    /// A write failed: the proxy closed or reset the connection.
    pub write_failed: bool,
}

impl H2Raw {
    /// Connects, sends the preface and SETTINGS, and acknowledges the server's.
    pub async fn connect(addr: SocketAddr) -> H2Raw {
        let stream = TcpStream::connect(addr).await.expect("connect to proxy");
        stream.set_nodelay(true).expect("nodelay");
        let (mut reader, writer) = stream.into_split();
        let seen = Arc::new(Mutex::new(H2Seen::default()));
        let reader_seen = Arc::clone(&seen);
        let reader = tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                match reader.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                while buf.len() >= 9 {
                    let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
                    if buf.len() < 9 + len {
                        break;
                    }
                    let frame: Vec<u8> = buf.drain(..9 + len).collect();
                    note_frame(&mut lock(&reader_seen), &frame);
                }
            }
            lock(&reader_seen).closed = true;
        });
        let mut raw = H2Raw {
            writer,
            seen,
            reader,
            written: 0,
            write_failed: false,
        };
        let mut hello = H2_PREFACE.to_vec();
        hello.extend(h2_frame(frames::SETTINGS, 0, 0, &[]));
        raw.send(&hello).await;
        let seen = Arc::clone(&raw.seen);
        eventually("the server's SETTINGS", || {
            let s = lock(&seen);
            s.settings > 0 || s.closed
        })
        .await;
        raw.send(&h2_frame(frames::SETTINGS, frames::ACK, 0, &[]))
            .await;
        raw
    }

    /// Writes `bytes`; returns false (and remembers) once the proxy has
    /// closed the connection.
    pub async fn send(&mut self, bytes: &[u8]) -> bool {
        if self.write_failed {
            return false;
        }
        match self.writer.write_all(bytes).await {
            Ok(()) => {
                self.written += bytes.len();
                true
            }
            Err(_) => {
                self.write_failed = true;
                false
            }
        }
    }

    pub fn seen(&self) -> H2Seen {
        lock(&self.seen).clone()
    }

    /// Waits up to `limit` for the server to close the connection (or to
    /// send GOAWAY); returns whether it did.
    pub async fn closed_within(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let seen = self.seen();
            if seen.closed || seen.goaway.is_some() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for H2Raw {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn note_frame(seen: &mut H2Seen, frame: &[u8]) {
    let (kind, flags) = (frame[3], frame[4]);
    let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
    let payload = &frame[9..];
    let code = |at: usize| {
        payload
            .get(at..at + 4)
            .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    match kind {
        frames::SETTINGS if flags & frames::ACK != 0 => seen.settings_acks += 1,
        frames::SETTINGS => seen.settings += 1,
        frames::GOAWAY => seen.goaway = Some(code(4)),
        frames::RST_STREAM => seen.resets.push((stream, code(0))),
        frames::DATA => seen.data_bytes += payload.len(),
        frames::HEADERS => {
            let mut block = payload;
            // PADDED and PRIORITY flags.
            if flags & 0x8 != 0 {
                let pad = usize::from(block.first().copied().unwrap_or(0));
                block = block.get(1..block.len().saturating_sub(pad)).unwrap_or(&[]);
            }
            if flags & 0x20 != 0 {
                block = block.get(5..).unwrap_or(&[]);
            }
            seen.responses.push((stream, response_status(block)));
        }
        _ => {}
    }
}

/// The `:status` of a response header block when it comes first and is
/// either a static-table entry or a literal (plain or Huffman-coded digits).
fn response_status(block: &[u8]) -> u16 {
    const STATIC: [u16; 7] = [200, 204, 206, 304, 400, 404, 500];
    let Some(&first) = block.first() else {
        return 0;
    };
    if first & 0x80 != 0 {
        let index = usize::from(first & 0x7f);
        return index
            .checked_sub(8)
            .and_then(|i| STATIC.get(i))
            .copied()
            .unwrap_or(0);
    }
    let name_index = if first & 0x40 != 0 {
        first & 0x3f
    } else {
        first & 0x0f
    };
    if !(8..=14).contains(&name_index) {
        return 0;
    }
    let Some(&len_byte) = block.get(1) else {
        return 0;
    };
    let len = usize::from(len_byte & 0x7f);
    let Some(value) = block.get(2..2 + len) else {
        return 0;
    };
    let digits = if len_byte & 0x80 != 0 {
        huffman_digits(value)
    } else {
        String::from_utf8_lossy(value).into_owned()
    };
    digits.parse().unwrap_or(0)
}

/// Decodes a Huffman-coded string of decimal digits (RFC 7541 Appendix B:
/// `0`-`2` are 5-bit codes 0-2, `3`-`9` are 6-bit codes 25-31).
fn huffman_digits(bytes: &[u8]) -> String {
    let bits: Vec<u8> = bytes
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
        .collect();
    let value = |from: usize, n: usize| bits[from..from + n].iter().fold(0u8, |a, b| a << 1 | b);
    let mut out = String::new();
    let mut at = 0;
    while at + 5 <= bits.len() {
        let five = value(at, 5);
        if five <= 2 {
            out.push(char::from(b'0' + five));
            at += 5;
        } else if at + 6 <= bits.len() && (25..=31).contains(&value(at, 6)) {
            out.push(char::from(b'3' + value(at, 6) - 25));
            at += 6;
        } else {
            break;
        }
    }
    out
}
