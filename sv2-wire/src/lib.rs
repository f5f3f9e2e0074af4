//! The Stratum V2 wire, shared by every SV2 peer we run or talk to.
//!
//! - [`keys`]: authority keys, as pools publish and clients pin them;
//! - [`noise`]: the Noise handshake (either side) and the encrypted, framed halves;
//! - [`frames`]: one reader task per connection, receive with a timeout, typed decode;
//! - [`setup`]: TCP, Noise and `SetupConnection` for a client in one call;
//! - [`tdp`]: Template Distribution messages to and from [`mining_types`] templates.
//!
//! The cryptography and framing are the reference implementation's own crates (`noise_sv2`,
//! `codec_sv2`), so what we send is exactly what the reference pool reads.

#![warn(missing_docs)]

pub mod frames;
pub mod keys;
pub mod noise;
pub mod setup;
pub mod tdp;

pub use frames::{spawn_reader, Frame, Frames};
pub use keys::{AuthorityKeypair, AuthorityPublicKey, KeyError};
pub use noise::{accept, connect, connect_at, NoiseReader, NoiseWriter};
pub use setup::{open, Connection};

use std::time::Duration;

/// The Stratum V2 protocol version spoken by every protocol here (the only one there is).
pub const SV2_VERSION: u16 = 2;

/// What went wrong on an SV2 connection. Who the peer is (pool, JDS, provider, client) is for
/// the caller to say.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Sv2Error {
    /// TCP connect failed.
    #[error("cannot reach {address}: {source}")]
    Connect {
        /// Where we tried.
        address: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The peer closed the connection.
    #[error("connection closed by the peer")]
    Closed,
    /// The handshake did not finish in time.
    #[error("handshake not finished within {0:?}")]
    HandshakeTimeout(Duration),
    /// The handshake failed (a wrong authority key among the causes).
    #[error("noise handshake failed: {0}")]
    Handshake(String),
    /// A frame that does not decrypt or decode as a frame.
    #[error("frame could not be decrypted or decoded: {0}")]
    Codec(String),
    /// A message we could not encode.
    #[error("message could not be encoded: {0}")]
    Encode(String),
    /// A message body that does not decode as its type says.
    #[error("message 0x{msg_type:02x} does not decode: {detail}")]
    Decode {
        /// The frame's message type.
        msg_type: u8,
        /// The decoder's complaint.
        detail: String,
    },
    /// A message type that has no place here.
    #[error("unexpected message type 0x{0:02x}")]
    Unexpected(u8),
    /// `SetupConnection` was refused, with the peer's reason.
    #[error("setup refused: {0}")]
    Refused(String),
    /// No message within the time allowed.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
