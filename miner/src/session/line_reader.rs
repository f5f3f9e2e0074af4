//! Line framing for the server's side of the connection.

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// Reads `\n`-terminated lines with a length limit. Cancel-safe: a partial line survives a
/// dropped `next_line` future.
pub(super) struct LineReader<R> {
    inner: BufReader<R>,
    buf: Vec<u8>,
    max: usize,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub(super) fn new(inner: R, max: usize) -> Self {
        LineReader {
            inner: BufReader::new(inner),
            buf: Vec::new(),
            max,
        }
    }

    /// The next non-empty line (without `\r\n`), or `None` at end of stream.
    pub(super) async fn next_line(&mut self) -> Result<Option<String>> {
        loop {
            let available = self.inner.fill_buf().await.context("read")?;
            if available.is_empty() {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                let line = std::mem::take(&mut self.buf);
                return Ok(Some(String::from_utf8_lossy(&line).trim().to_string()));
            }
            let (take, complete) = match available.iter().position(|&b| b == b'\n') {
                Some(pos) => (pos, true),
                None => (available.len(), false),
            };
            if self.buf.len() + take > self.max {
                bail!("server sent a line longer than {} bytes", self.max);
            }
            self.buf.extend_from_slice(&available[..take]);
            self.inner.consume(if complete { take + 1 } else { take });
            if complete {
                let line = std::mem::take(&mut self.buf);
                let line = String::from_utf8_lossy(&line).trim().to_string();
                if !line.is_empty() {
                    return Ok(Some(line));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn line_reader_limits_and_splits() {
        let data: &[u8] = b"{\"a\":1}\r\n\n{\"b\":2}\npartial";
        let mut r = LineReader::new(data, 100);
        assert_eq!(r.next_line().await.unwrap().as_deref(), Some("{\"a\":1}"));
        assert_eq!(r.next_line().await.unwrap().as_deref(), Some("{\"b\":2}"));
        assert_eq!(r.next_line().await.unwrap().as_deref(), Some("partial"));
        assert_eq!(r.next_line().await.unwrap(), None);
        let long = vec![b'x'; 300];
        let mut r = LineReader::new(&long[..], 100);
        assert!(r.next_line().await.is_err());
    }
}
