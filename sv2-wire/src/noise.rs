//! A Noise-encrypted SV2 connection: the handshake as responder or initiator, then frames in
//! and out. Reading and writing are split so one task can read while another writes.
//!
//! `Noise_NX_Secp256k1+EllSwift_ChaChaPoly_SHA256`: the responder's static key comes in a
//! certificate signed by its authority key, which the initiator pins.

use std::time::Duration;

use binary_sv2::{GetSize, Serialize};
use codec_sv2::{
    Decoded, Decrypted, ExpectsHandshakeMessage, Handshake, InitiatorSent, NoiseDecoder,
    NoiseEncoder, TransportDecryptState, TransportEncryptState,
};
use framing_sv2::framing::MessageFrame;
use noise_sv2::{
    Initiator, Responder, ELLSWIFT_ENCODING_SIZE, INITIATOR_EXPECTED_HANDSHAKE_MESSAGE_SIZE,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::frames::Frame;
use crate::keys::{AuthorityKeypair, AuthorityPublicKey};
use crate::Sv2Error;

// A `map_err` adapter: it takes what `map_err` hands it.
#[allow(clippy::needless_pass_by_value)]
fn codec(e: codec_sv2::Error) -> Sv2Error {
    Sv2Error::Codec(e.to_string())
}

/// The reading half; see [`crate::spawn_reader`].
pub struct NoiseReader {
    stream: OwnedReadHalf,
    decoder: NoiseDecoder,
    state: Option<TransportDecryptState>,
}

impl std::fmt::Debug for NoiseReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NoiseReader")
    }
}

impl NoiseReader {
    /// Reads the next frame. Not cancel safe: run it in a task of its own when other work must
    /// go on meanwhile.
    ///
    /// # Errors
    /// [`Sv2Error::Closed`] at end of stream, a decryption failure, or the I/O error.
    pub async fn recv(&mut self) -> Result<Frame, Sv2Error> {
        loop {
            let need = self.decoder.writable();
            read_exact_or_closed(&mut self.stream, need).await?;
            let state = self.state.take().ok_or_else(|| {
                Sv2Error::Codec("decoder state lost after an earlier error".into())
            })?;
            match self.decoder.next_transport_frame(state).map_err(codec)? {
                Decrypted::Frame(mut frame, state) => {
                    self.state = Some(state);
                    let header = frame.header();
                    return Ok(Frame {
                        msg_type: header.msg_type(),
                        extension_type: header.ext_type_without_channel_msg(),
                        payload: frame.payload().to_vec(),
                    });
                }
                Decrypted::Incomplete(_, state) => self.state = Some(state),
            }
        }
    }
}

/// The writing half.
pub struct NoiseWriter {
    stream: OwnedWriteHalf,
    encoder: NoiseEncoder,
    state: TransportEncryptState,
    /// Encrypted frames queued by [`queue`](Self::queue), written by [`flush`](Self::flush).
    pending: Vec<u8>,
}

impl std::fmt::Debug for NoiseWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NoiseWriter")
    }
}

impl NoiseWriter {
    /// Encrypts one message into the queue; nothing is written until [`flush`](Self::flush)
    /// (or the next [`send`](Self::send)), so a burst of messages costs one write.
    ///
    /// # Errors
    /// A message that cannot be framed or encrypted.
    pub fn queue<T: Serialize + GetSize>(
        &mut self,
        message: T,
        msg_type: u8,
        channel_msg: bool,
    ) -> Result<(), Sv2Error> {
        let frame = MessageFrame::from_message(message, msg_type, 0, channel_msg)
            .map_err(|e| Sv2Error::Encode(format!("{e:?}")))?;
        let bytes = self
            .encoder
            .encode_transport(frame, &mut self.state)
            .map_err(codec)?;
        self.pending.extend_from_slice(bytes.as_ref());
        Ok(())
    }

    /// Writes every queued message.
    ///
    /// # Errors
    /// The I/O error.
    pub async fn flush(&mut self) -> Result<(), Sv2Error> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let result = self.stream.write_all(&self.pending).await;
        self.pending.clear();
        if self.pending.capacity() > 1 << 20 {
            self.pending = Vec::new();
        }
        result.map_err(Into::into)
    }

    /// Encrypts and sends one message (after anything queued).
    ///
    /// # Errors
    /// A message that cannot be framed, or the I/O error.
    pub async fn send<T: Serialize + GetSize>(
        &mut self,
        message: T,
        msg_type: u8,
        channel_msg: bool,
    ) -> Result<(), Sv2Error> {
        self.queue(message, msg_type, channel_msg)?;
        self.flush().await
    }
}

async fn read_exact_or_closed(stream: &mut OwnedReadHalf, buf: &mut [u8]) -> Result<(), Sv2Error> {
    match stream.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(Sv2Error::Closed),
        Err(e) => Err(e.into()),
    }
}

/// Reads the peer's next handshake message, of the size role `R` expects.
async fn handshake_message<R: ExpectsHandshakeMessage, const N: usize>(
    decoder: &mut NoiseDecoder,
    r: &mut OwnedReadHalf,
    short: &str,
) -> Result<[u8; N], Sv2Error> {
    let message = loop {
        match decoder.next_handshake_frame::<R>().map_err(codec)? {
            Decoded::Frame(m) => break m,
            Decoded::Incomplete(_) => read_exact_or_closed(r, decoder.writable()).await?,
        }
    };
    message
        .payload()
        .try_into()
        .map_err(|_| Sv2Error::Handshake(short.into()))
}

/// The two halves of a connection whose handshake is done.
fn halves(
    r: OwnedReadHalf,
    w: OwnedWriteHalf,
    decoder: NoiseDecoder,
    encoder: NoiseEncoder,
    transport: codec_sv2::Transport,
) -> (NoiseReader, NoiseWriter) {
    let (enc, dec) = transport.split();
    (
        NoiseReader {
            stream: r,
            decoder,
            state: Some(dec),
        },
        NoiseWriter {
            stream: w,
            encoder,
            state: enc,
            pending: Vec::new(),
        },
    )
}

/// Runs the responder side of the handshake on an accepted socket.
///
/// # Errors
/// A handshake that fails or does not finish within `timeout`.
pub async fn accept(
    stream: TcpStream,
    keys: &AuthorityKeypair,
    cert_validity: Duration,
    timeout: Duration,
) -> Result<(NoiseReader, NoiseWriter), Sv2Error> {
    let responder = Responder::from_authority_kp(
        &keys.public().to_bytes(),
        &keys.secret_bytes(),
        cert_validity,
    )
    .map_err(|e| Sv2Error::Handshake(format!("{e:?}")))?;
    tokio::time::timeout(timeout, async move {
        let _ = stream.set_nodelay(true);
        let (mut r, mut w) = stream.into_split();
        let mut decoder = NoiseDecoder::new();
        let mut encoder = NoiseEncoder::new();
        let theirs: [u8; ELLSWIFT_ENCODING_SIZE] =
            handshake_message::<Responder, _>(&mut decoder, &mut r, "short ephemeral key").await?;
        let (reply, transport) = Handshake::responder(responder)
            .step_1(theirs)
            .map_err(|e| Sv2Error::Handshake(e.to_string()))?;
        w.write_all(encoder.encode_handshake(reply).as_ref())
            .await?;
        Ok(halves(r, w, decoder, encoder, transport))
    })
    .await
    .map_err(|_| Sv2Error::HandshakeTimeout(timeout))?
}

/// Runs the initiator side of the handshake, pinning `authority` (the responder's certificate
/// must be signed by it and valid now).
///
/// # Errors
/// A certificate not signed by the pinned key or out of its validity window, a handshake that
/// fails, or one that does not finish within `timeout`.
pub async fn connect(
    stream: TcpStream,
    authority: AuthorityPublicKey,
    timeout: Duration,
) -> Result<(NoiseReader, NoiseWriter), Sv2Error> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
    connect_at(stream, authority, timeout, now).await
}

/// [`connect`] with the certificate's validity window checked at `now` (Unix seconds).
///
/// # Errors
/// As [`connect`].
pub async fn connect_at(
    stream: TcpStream,
    authority: AuthorityPublicKey,
    timeout: Duration,
    now: u32,
) -> Result<(NoiseReader, NoiseWriter), Sv2Error> {
    let initiator = Initiator::from_raw_k(authority.to_bytes())
        .map_err(|e| Sv2Error::Handshake(format!("{e:?}")))?;
    tokio::time::timeout(timeout, async move {
        let _ = stream.set_nodelay(true);
        let (mut r, mut w) = stream.into_split();
        let mut decoder = NoiseDecoder::new();
        let mut encoder = NoiseEncoder::new();
        let (first, sent) = Handshake::initiator(initiator)
            .step_0()
            .map_err(|e| Sv2Error::Handshake(e.to_string()))?;
        w.write_all(encoder.encode_handshake(first).as_ref())
            .await?;
        let reply: [u8; INITIATOR_EXPECTED_HANDSHAKE_MESSAGE_SIZE] =
            handshake_message::<InitiatorSent, _>(&mut decoder, &mut r, "short handshake reply")
                .await?;
        let transport = sent.step_2_with_now(reply, now).map_err(|e| {
            Sv2Error::Handshake(format!(
                "the responder's certificate is not valid for the pinned authority key (not signed by it, or outside its validity window): {e}"
            ))
        })?;
        Ok(halves(r, w, decoder, encoder, transport))
    })
    .await
    .map_err(|_| Sv2Error::HandshakeTimeout(timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use common_messages_sv2::SetupConnectionSuccess;

    #[tokio::test]
    async fn handshake_and_frames_over_loopback() {
        let keys = AuthorityKeypair::generate();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server_keys = keys.clone();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let (mut r, mut w) = accept(
                s,
                &server_keys,
                Duration::from_secs(60),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
            let f = r.recv().await.unwrap();
            w.send(
                SetupConnectionSuccess {
                    used_version: 2,
                    flags: 7,
                },
                0x01,
                false,
            )
            .await
            .unwrap();
            f
        });
        let (mut r, mut w) = connect(
            TcpStream::connect(addr).await.unwrap(),
            keys.public(),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        w.send(
            SetupConnectionSuccess {
                used_version: 2,
                flags: 3,
            },
            0x01,
            false,
        )
        .await
        .unwrap();
        let mut reply = r.recv().await.unwrap();
        let got: SetupConnectionSuccess = binary_sv2::from_bytes(&mut reply.payload).unwrap();
        assert_eq!((reply.msg_type, got.flags), (0x01, 7));
        let mut seen = server.await.unwrap();
        let got: SetupConnectionSuccess = binary_sv2::from_bytes(&mut seen.payload).unwrap();
        assert_eq!(got.flags, 3);
    }

    #[tokio::test]
    async fn an_expired_or_future_certificate_is_refused() {
        let keys = AuthorityKeypair::generate();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server_keys = keys.clone();
        tokio::spawn(async move {
            for _ in 0..3 {
                let (s, _) = listener.accept().await.unwrap();
                // A certificate valid for one minute from now.
                let _ = accept(
                    s,
                    &server_keys,
                    Duration::from_secs(60),
                    Duration::from_secs(5),
                )
                .await;
            }
        });
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as u32;
        for (when, ok) in [(now + 3600, false), (now - 3600, false), (now, true)] {
            let r = connect_at(
                TcpStream::connect(addr).await.unwrap(),
                keys.public(),
                Duration::from_secs(5),
                when,
            )
            .await;
            match r {
                Ok(_) => assert!(
                    ok,
                    "a certificate checked {}s off its window was accepted",
                    when.abs_diff(now)
                ),
                Err(e) => {
                    assert!(!ok, "{e}");
                    assert!(e.to_string().contains("validity window"), "{e}");
                }
            }
        }
    }

    #[tokio::test]
    async fn a_wrong_pinned_key_is_refused() {
        let keys = AuthorityKeypair::generate();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let _ = accept(s, &keys, Duration::from_secs(60), Duration::from_secs(5)).await;
        });
        let other = AuthorityKeypair::generate().public();
        let err = connect(
            TcpStream::connect(addr).await.unwrap(),
            other,
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("pinned authority key"), "{err}");
    }
}
