//! The client side of an SV2 connection: TCP, the Noise handshake pinning the peer's authority
//! key, and `SetupConnection` for one protocol. What follows is the caller's protocol.

use std::time::Duration;

use binary_sv2::Str0255;
use common_messages_sv2::{
    Protocol, SetupConnection, SetupConnectionError, SetupConnectionSuccess,
    MESSAGE_TYPE_SETUP_CONNECTION, MESSAGE_TYPE_SETUP_CONNECTION_ERROR,
    MESSAGE_TYPE_SETUP_CONNECTION_SUCCESS,
};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::{connect, AuthorityPublicKey, Frame, NoiseReader, NoiseWriter, Sv2Error};

/// Why a connection could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error("cannot reach {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Sv2(#[from] Sv2Error),
    #[error("setup refused: {0}")]
    Refused(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// A set-up connection: frames arrive on `frames` (read by a task of its own, so the owner may
/// `select!` on it), messages go out through `writer`.
#[derive(Debug)]
pub struct Client {
    pub frames: mpsc::Receiver<Result<Frame, Sv2Error>>,
    pub writer: NoiseWriter,
    /// The flags the server answered with.
    pub flags: u32,
}

impl Client {
    /// The next frame, waiting at most `timeout`.
    ///
    /// # Errors
    /// The connection's error, [`Sv2Error::Closed`], or [`OpenError::Timeout`].
    pub async fn recv(&mut self, timeout: Duration) -> Result<Frame, OpenError> {
        recv(&mut self.frames, timeout).await
    }
}

/// The next frame from a reader task, waiting at most `timeout`.
///
/// # Errors
/// The connection's error, [`Sv2Error::Closed`], or [`OpenError::Timeout`].
pub async fn recv(
    frames: &mut mpsc::Receiver<Result<Frame, Sv2Error>>,
    timeout: Duration,
) -> Result<Frame, OpenError> {
    match tokio::time::timeout(timeout, frames.recv()).await {
        Ok(Some(Ok(f))) => Ok(f),
        Ok(Some(Err(e))) => Err(e.into()),
        Ok(None) => Err(Sv2Error::Closed.into()),
        Err(_) => Err(OpenError::Timeout(timeout)),
    }
}

/// Connects to `address`, checks its certificate against `authority`, and sets up `protocol`
/// with `flags`.
///
/// # Errors
/// Unreachable, a certificate not signed by `authority`, a refused setup, or no answer in time.
pub async fn open(
    address: &str,
    authority: AuthorityPublicKey,
    protocol: Protocol,
    version: u16,
    flags: u32,
    timeout: Duration,
) -> Result<Client, OpenError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(address))
        .await
        .map_err(|_| OpenError::Connect {
            address: address.to_owned(),
            source: std::io::ErrorKind::TimedOut.into(),
        })?
        .map_err(|source| OpenError::Connect {
            address: address.to_owned(),
            source,
        })?;
    let (reader, mut writer) = connect(stream, authority, timeout).await?;
    let empty = || Str0255::try_from(&b""[..]).expect("empty fits");
    let setup = SetupConnection {
        protocol,
        min_version: version,
        max_version: version,
        flags,
        endpoint_host: empty(),
        endpoint_port: 0,
        vendor: Str0255::try_from(&b"jd-proxy"[..]).expect("short"),
        hardware_version: empty(),
        firmware: Str0255::try_from(env!("CARGO_PKG_VERSION").as_bytes()).expect("short"),
        device_id: empty(),
    };
    writer
        .send(setup, MESSAGE_TYPE_SETUP_CONNECTION, false)
        .await?;
    let mut client = Client {
        frames: spawn_reader(reader),
        writer,
        flags: 0,
    };
    let mut reply = client.recv(timeout).await?;
    match reply.msg_type {
        MESSAGE_TYPE_SETUP_CONNECTION_SUCCESS => {
            let ok: SetupConnectionSuccess = binary_sv2::from_bytes(&mut reply.payload)
                .map_err(|e| OpenError::Refused(format!("undecodable success: {e:?}")))?;
            client.flags = ok.flags;
            Ok(client)
        }
        MESSAGE_TYPE_SETUP_CONNECTION_ERROR => {
            let err: SetupConnectionError = binary_sv2::from_bytes(&mut reply.payload)
                .map_err(|e| OpenError::Refused(format!("undecodable error: {e:?}")))?;
            Err(OpenError::Refused(format!(
                "{} (flags {:#x})",
                err.error_code.as_utf8_or_hex(),
                err.flags
            )))
        }
        other => Err(OpenError::Refused(format!("answer of type 0x{other:02x}"))),
    }
}

/// Reads frames in a task of its own: [`NoiseReader::recv`] is not cancel safe.
pub fn spawn_reader(mut reader: NoiseReader) -> mpsc::Receiver<Result<Frame, Sv2Error>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let frame = reader.recv().await;
            let stop = frame.is_err();
            if tx.send(frame).await.is_err() || stop {
                return;
            }
        }
    });
    rx
}
