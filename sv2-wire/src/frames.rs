//! Frames in: one reader task per connection, receiving with a timeout, and typed decoding.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use crate::noise::NoiseReader;
use crate::Sv2Error;

/// Frames a reader task buffers before it stops reading (backpressure on the peer).
const READ_AHEAD: usize = 64;

/// One decrypted frame: its header fields and an owned payload to decode.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The message type.
    pub msg_type: u8,
    /// The extension type, without the channel-message bit.
    pub extension_type: u16,
    /// The message body.
    pub payload: Vec<u8>,
}

impl Frame {
    /// Decodes the body as a `T`.
    ///
    /// # Errors
    /// [`Sv2Error::Decode`] naming the message type.
    pub fn decode<'a, T: binary_sv2::Deserialize<'a>>(&'a mut self) -> Result<T, Sv2Error> {
        let msg_type = self.msg_type;
        binary_sv2::from_bytes(&mut self.payload).map_err(|e| Sv2Error::Decode {
            msg_type,
            detail: format!("{e:?}"),
        })
    }
}

/// The frames of one connection, as its reader task delivers them.
#[derive(Debug)]
pub struct Frames {
    rx: mpsc::Receiver<Result<Frame, Sv2Error>>,
}

impl Frames {
    /// The next frame. Cancel safe, so it can sit in a `select!`.
    ///
    /// # Errors
    /// The connection's error, or [`Sv2Error::Closed`].
    pub async fn recv(&mut self) -> Result<Frame, Sv2Error> {
        match self.rx.recv().await {
            Some(r) => r,
            None => Err(Sv2Error::Closed),
        }
    }

    /// The next frame, waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`recv`](Self::recv), or [`Sv2Error::Timeout`].
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Result<Frame, Sv2Error> {
        tokio::time::timeout(timeout, self.recv())
            .await
            .map_err(|_| Sv2Error::Timeout(timeout))?
    }
}

/// Starts the connection's reader task on `tracker`: [`NoiseReader::recv`] is not cancel safe,
/// so it runs alone and hands whole frames over. The task ends at the first error, or as soon
/// as the [`Frames`] are dropped.
pub fn spawn_reader(mut reader: NoiseReader, tracker: &TaskTracker) -> Frames {
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    tracker.spawn(async move {
        loop {
            let frame = tokio::select! {
                () = tx.closed() => return,
                f = reader.recv() => f,
            };
            let stop = frame.is_err();
            if tx.send(frame).await.is_err() || stop {
                return;
            }
        }
    });
    Frames { rx }
}
