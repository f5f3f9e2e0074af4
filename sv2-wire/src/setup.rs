//! The client side of an SV2 connection in one call: TCP, the Noise handshake pinning the
//! peer's authority key, and `SetupConnection` for one protocol. What follows is the caller's
//! protocol.

use std::time::Duration;

use binary_sv2::Str0255;
use common_messages_sv2::{
    Protocol, SetupConnection, SetupConnectionError, SetupConnectionSuccess,
    MESSAGE_TYPE_SETUP_CONNECTION, MESSAGE_TYPE_SETUP_CONNECTION_ERROR,
    MESSAGE_TYPE_SETUP_CONNECTION_SUCCESS,
};
use tokio::net::TcpStream;
use tokio_util::task::TaskTracker;

use crate::frames::{spawn_reader, Frames};
use crate::keys::AuthorityPublicKey;
use crate::noise::{connect, NoiseWriter};
use crate::{Sv2Error, SV2_VERSION};

/// A set-up connection: frames in (read by a task of its own, so the owner may `select!` on
/// them), messages out through `writer`.
#[derive(Debug)]
pub struct Connection {
    /// What the peer sends.
    pub frames: Frames,
    /// What we send.
    pub writer: NoiseWriter,
    /// The flags the peer answered `SetupConnection` with.
    pub flags: u32,
}

/// Connects to `address`, checks its certificate against `authority`, and sets up `protocol`
/// with `flags`; the reader task runs on `tracker`. `timeout` bounds each step.
///
/// # Errors
/// Unreachable, a certificate not signed by `authority`, a refused setup, or no answer in time.
pub async fn open(
    address: &str,
    authority: AuthorityPublicKey,
    protocol: Protocol,
    flags: u32,
    timeout: Duration,
    tracker: &TaskTracker,
) -> Result<Connection, Sv2Error> {
    let connect_error = |source| Sv2Error::Connect {
        address: address.to_owned(),
        source,
    };
    let stream = tokio::time::timeout(timeout, TcpStream::connect(address))
        .await
        .map_err(|_| connect_error(std::io::ErrorKind::TimedOut.into()))?
        .map_err(connect_error)?;
    let (reader, mut writer) = connect(stream, authority, timeout).await?;
    let empty = || Str0255::try_from(&b""[..]).expect("empty fits");
    let setup = SetupConnection {
        protocol,
        min_version: SV2_VERSION,
        max_version: SV2_VERSION,
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
    let mut frames = spawn_reader(reader, tracker);
    let mut reply = frames.recv_timeout(timeout).await?;
    match reply.msg_type {
        MESSAGE_TYPE_SETUP_CONNECTION_SUCCESS => {
            let ok: SetupConnectionSuccess = reply.decode()?;
            let flags = ok.flags;
            Ok(Connection {
                frames,
                writer,
                flags,
            })
        }
        MESSAGE_TYPE_SETUP_CONNECTION_ERROR => {
            let err: SetupConnectionError = reply.decode()?;
            Err(Sv2Error::Refused(format!(
                "{} (flags {:#x})",
                err.error_code.as_utf8_or_hex(),
                err.flags
            )))
        }
        other => Err(Sv2Error::Unexpected(other)),
    }
}
