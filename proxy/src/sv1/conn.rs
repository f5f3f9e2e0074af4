//! One miner's socket: bounded line framing in, whole lines out. Nothing above this type sees
//! a byte of the stream.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why a connection stopped delivering lines.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnError {
    /// No newline within the limit.
    #[error("line longer than {max} bytes")]
    LineTooLong {
        /// The limit.
        max: usize,
    },
    /// End of stream.
    #[error("connection closed by the miner")]
    Closed,
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A miner connection.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    lines: LineFramer,
}

/// Start small: an idle miner should cost little memory; the buffer grows only while a long
/// line is being read.
const INITIAL_BUF: usize = 512;

impl Connection {
    /// A connection over `stream` that refuses lines over `max_line` bytes.
    pub fn new(stream: TcpStream, max_line: usize) -> Self {
        let _ = stream.set_nodelay(true);
        Connection {
            stream,
            lines: LineFramer::new(max_line),
        }
    }

    /// Reads the next non-empty line, without its `\n` (and `\r`).
    ///
    /// Cancel safe: bytes already read stay in the buffer.
    ///
    /// # Errors
    /// [`ConnError::LineTooLong`] when no newline comes within the limit, [`ConnError::Closed`]
    /// at end of stream, or the I/O error.
    pub async fn read_line(&mut self) -> Result<BytesMut, ConnError> {
        loop {
            if let Some(line) = self.lines.take_line()? {
                return Ok(line);
            }
            if self.stream.read_buf(self.lines.read_buf()).await? == 0 {
                return Err(ConnError::Closed);
            }
        }
    }

    /// Writes bytes (one or more whole lines) and flushes them.
    ///
    /// # Errors
    /// The I/O error.
    pub async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// The address the miner connected to: where `client.reconnect` sends it back.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.stream.local_addr().ok()
    }

    /// Whether a whole line waits in the read buffer (pipelined requests).
    pub fn has_buffered_line(&self) -> bool {
        self.lines.has_buffered_line()
    }

    /// Drops everything buffered: used after a fatal error.
    pub fn discard(&mut self) {
        self.lines.discard();
    }
}

/// Bounded line framing over the bytes read so far, without the socket (public for the
/// benchmarks).
///
/// Newlines are found with `memchr` (SIMD), and bytes already searched are not searched
/// again: a line that arrives in many segments is scanned once, not once per segment.
#[derive(Debug)]
pub struct LineFramer {
    buf: BytesMut,
    max_line: usize,
    /// How many bytes at the front of `buf` are known to hold no `\n`.
    scanned: usize,
}

impl LineFramer {
    /// An empty framer for lines of at most `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        LineFramer {
            buf: BytesMut::new(),
            max_line,
            scanned: 0,
        }
    }

    /// The buffer to read more bytes into, with room for at least one more read.
    pub fn read_buf(&mut self) -> &mut BytesMut {
        if self.buf.capacity() == self.buf.len() {
            self.buf.reserve(INITIAL_BUF.max(self.buf.len()));
        }
        &mut self.buf
    }

    /// The next non-empty line, without its `\n` (and `\r`), or `None` until one is whole.
    ///
    /// # Errors
    /// [`ConnError::LineTooLong`] when no newline comes within the limit.
    pub fn take_line(&mut self) -> Result<Option<BytesMut>, ConnError> {
        loop {
            let Some(found) = memchr::memchr(b'\n', &self.buf[self.scanned..]) else {
                self.scanned = self.buf.len();
                if self.buf.len() > self.max_line {
                    return Err(ConnError::LineTooLong { max: self.max_line });
                }
                return Ok(None);
            };
            let end = self.scanned + found;
            self.scanned = 0;
            if end > self.max_line {
                return Err(ConnError::LineTooLong { max: self.max_line });
            }
            let mut line = self.buf.split_to(end + 1);
            line.truncate(end);
            if line.last() == Some(&b'\r') {
                line.truncate(end - 1);
            }
            if self.buf.is_empty() {
                // Give back whatever a burst made us allocate.
                self.buf = BytesMut::new();
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Ok(Some(line));
        }
    }

    /// Whether a whole line waits in the buffer.
    pub fn has_buffered_line(&self) -> bool {
        memchr::memchr(b'\n', &self.buf[self.scanned..]).is_some()
    }

    /// Drops everything buffered.
    pub fn discard(&mut self) {
        self.buf.advance(self.buf.len());
        self.scanned = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(f: &mut LineFramer, bytes: &[u8]) {
        f.read_buf().extend_from_slice(bytes);
    }

    fn line(f: &mut LineFramer) -> Option<String> {
        f.take_line()
            .expect("within the limit")
            .map(|l| String::from_utf8(l.to_vec()).expect("utf-8"))
    }

    #[test]
    fn pipelined_split_and_blank_lines() {
        let mut f = LineFramer::new(64);
        feed(&mut f, b"one\r\n\n  \r\ntwo\nthr");
        assert!(f.has_buffered_line());
        assert_eq!(line(&mut f).as_deref(), Some("one"));
        assert!(f.has_buffered_line());
        assert_eq!(line(&mut f).as_deref(), Some("two"));
        assert!(!f.has_buffered_line());
        assert_eq!(line(&mut f), None);
        // The rest of a line in pieces: only the new bytes are searched, the line is whole.
        feed(&mut f, b"ee");
        assert_eq!(line(&mut f), None);
        assert!(!f.has_buffered_line());
        feed(&mut f, b"\nfour\n");
        assert!(f.has_buffered_line());
        assert_eq!(line(&mut f).as_deref(), Some("three"));
        assert_eq!(line(&mut f).as_deref(), Some("four"));
        assert_eq!(line(&mut f), None);
        f.discard();
        assert_eq!(line(&mut f), None);
    }

    #[test]
    fn long_lines_are_refused() {
        let mut f = LineFramer::new(8);
        feed(&mut f, b"12345678\n");
        assert_eq!(line(&mut f).as_deref(), Some("12345678"));
        feed(&mut f, b"12345");
        assert_eq!(line(&mut f), None);
        feed(&mut f, b"6789");
        assert!(matches!(
            f.take_line(),
            Err(ConnError::LineTooLong { max: 8 })
        ));
        let mut f = LineFramer::new(8);
        feed(&mut f, b"123456789\nok\n");
        assert!(matches!(
            f.take_line(),
            Err(ConnError::LineTooLong { max: 8 })
        ));
    }
}
