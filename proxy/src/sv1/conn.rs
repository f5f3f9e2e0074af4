//! One miner's socket: bounded line framing in, whole lines out. Nothing above this type sees
//! a byte of the stream.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why a connection stopped delivering lines.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnError {
    #[error("line longer than {max} bytes")]
    LineTooLong { max: usize },
    #[error("connection closed by the miner")]
    Closed,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A miner connection.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    buf: BytesMut,
    max_line: usize,
}

/// Start small: an idle miner should cost little memory; the buffer grows only while a long
/// line is being read.
const INITIAL_BUF: usize = 512;

impl Connection {
    pub fn new(stream: TcpStream, max_line: usize) -> Self {
        let _ = stream.set_nodelay(true);
        Connection {
            stream,
            buf: BytesMut::new(),
            max_line,
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
            if let Some(line) = self.take_line()? {
                return Ok(line);
            }
            if self.buf.capacity() == self.buf.len() {
                self.buf.reserve(INITIAL_BUF.max(self.buf.len()));
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(ConnError::Closed);
            }
        }
    }

    fn take_line(&mut self) -> Result<Option<BytesMut>, ConnError> {
        loop {
            let Some(end) = memchr(b'\n', &self.buf) else {
                if self.buf.len() > self.max_line {
                    return Err(ConnError::LineTooLong { max: self.max_line });
                }
                return Ok(None);
            };
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

    /// Writes bytes (one or more whole lines) and flushes them.
    ///
    /// # Errors
    /// The I/O error.
    pub async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Bytes waiting in the read buffer (pipelined requests).
    pub fn has_buffered_line(&self) -> bool {
        memchr(b'\n', &self.buf).is_some()
    }

    /// Drops everything buffered: used after a fatal error.
    pub fn discard(&mut self) {
        self.buf.advance(self.buf.len());
    }
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}
