//! Finds where a chunked message body ends (RFC 9112 §7.1) while its bytes
//! are passed through untouched: chunk sizes, extensions, data, the last
//! chunk and the trailer section.

/// Limits on the framing lines, so a hostile peer cannot make us buffer.
const MAX_LINE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex size.
    Size {
        digits: u8,
    },
    /// After the size: extensions until CR LF.
    SizeLine,
    SizeLf,
    /// `n` data bytes left in the chunk.
    Data(u64),
    DataCr,
    DataLf,
    /// After the last chunk: at the start of a trailer line (or the end).
    TrailerStart,
    /// Inside a trailer field line.
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

/// A chunked body that does not follow RFC 9112.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid chunked encoding")]
pub struct InvalidChunked;

/// Tracks the framing of one chunked body.
#[derive(Debug, Clone)]
pub struct Chunked {
    state: State,
    size: u64,
    line: usize,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked::new()
    }
}

impl Chunked {
    pub fn new() -> Chunked {
        Chunked {
            state: State::Size { digits: 0 },
            size: 0,
            line: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Feeds the next bytes of the body; returns how many belong to it (all
    /// of `data`, or fewer when the body ends inside `data`).
    pub fn feed(&mut self, data: &[u8]) -> Result<usize, InvalidChunked> {
        let mut i = 0;
        while i < data.len() {
            if let State::Data(left) = self.state {
                let take = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(data.len() - i);
                i += take;
                let left = left - take as u64;
                self.state = if left == 0 {
                    State::DataCr
                } else {
                    State::Data(left)
                };
                continue;
            }
            let b = data[i];
            i += 1;
            self.step(b)?;
            if self.state == State::Done {
                return Ok(i);
            }
        }
        Ok(i)
    }

    fn step(&mut self, b: u8) -> Result<(), InvalidChunked> {
        self.state = match self.state {
            State::Size { digits } => match hex(b) {
                Some(v) => {
                    if digits >= 16 {
                        return Err(InvalidChunked);
                    }
                    self.size = (self.size << 4) | u64::from(v);
                    State::Size { digits: digits + 1 }
                }
                None if digits == 0 => return Err(InvalidChunked),
                None => match b {
                    b'\r' => State::SizeLf,
                    b';' | b' ' | b'\t' => {
                        self.line = 0;
                        State::SizeLine
                    }
                    _ => return Err(InvalidChunked),
                },
            },
            State::SizeLine => match b {
                b'\r' => State::SizeLf,
                b'\n' => return Err(InvalidChunked),
                _ => {
                    self.line += 1;
                    if self.line > MAX_LINE {
                        return Err(InvalidChunked);
                    }
                    State::SizeLine
                }
            },
            State::SizeLf => {
                if b != b'\n' {
                    return Err(InvalidChunked);
                }
                let size = std::mem::take(&mut self.size);
                if size == 0 {
                    State::TrailerStart
                } else {
                    State::Data(size)
                }
            }
            // `feed` passes data bytes in bulk and never steps through them.
            State::Data(_) => return Err(InvalidChunked),
            State::DataCr => expect(b, b'\r', State::DataLf)?,
            State::DataLf => expect(b, b'\n', State::Size { digits: 0 })?,
            State::TrailerStart => match b {
                b'\r' => State::EndLf,
                b'\n' => return Err(InvalidChunked),
                _ => {
                    self.line = 1;
                    State::TrailerLine
                }
            },
            State::TrailerLine => match b {
                b'\r' => State::TrailerLf,
                b'\n' => return Err(InvalidChunked),
                _ => {
                    self.line += 1;
                    if self.line > MAX_LINE {
                        return Err(InvalidChunked);
                    }
                    State::TrailerLine
                }
            },
            State::TrailerLf => expect(b, b'\n', State::TrailerStart)?,
            State::EndLf => expect(b, b'\n', State::Done)?,
            State::Done => State::Done,
        };
        Ok(())
    }
}

fn expect(b: u8, want: u8, next: State) -> Result<State, InvalidChunked> {
    if b == want {
        Ok(next)
    } else {
        Err(InvalidChunked)
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(body: &[u8]) -> Result<usize, InvalidChunked> {
        let mut c = Chunked::new();
        let n = c.feed(body)?;
        assert!(c.is_done(), "not done after {body:?}");
        Ok(n)
    }

    #[test]
    fn finds_the_end_of_bodies() {
        assert_eq!(whole(b"0\r\n\r\nGET"), Ok(5));
        assert_eq!(whole(b"5\r\nhello\r\n0\r\n\r\n"), Ok(15));
        assert_eq!(
            whole(b"5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\n\r\n"),
            Ok(36)
        );
        let trailers = b"3\r\nabc\r\n0\r\ngrpc-status: 0\r\nx: y\r\n\r\nnext";
        assert_eq!(whole(trailers), Ok(trailers.len() - 4));
    }

    #[test]
    fn byte_by_byte_matches_all_at_once() {
        let body = b"1f\r\n0123456789012345678901234567890\r\n0\r\nt: 1\r\n\r\n";
        let mut c = Chunked::new();
        for (i, b) in body.iter().enumerate() {
            assert!(!c.is_done(), "done early at {i}");
            assert_eq!(c.feed(std::slice::from_ref(b)), Ok(1));
        }
        assert!(c.is_done());
    }

    #[test]
    fn refuses_malformed_framing() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\nhello\r\n",
            b"5\r\nhelloX\r\n",
            b"0\r\n\n",
            b"11111111111111111\r\n",
            b"-1\r\n",
        ] {
            let mut c = Chunked::new();
            assert_eq!(c.feed(bad), Err(InvalidChunked), "{bad:?}");
        }
    }
}
