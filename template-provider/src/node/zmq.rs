//! New tips from the node's ZMQ `hashblock` notifications (`-zmqpubhashblock=tcp://...`).
//!
//! The node pushes each new block hash the moment it connects the block, ahead of any RPC
//! answer. The message is three frames: the topic `hashblock`, the 32-byte hash in display
//! order, and a 4-byte little-endian sequence number.

use std::time::Duration;

use bitcoin::hashes::Hash;
use bitcoin::BlockHash;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use zeromq::{Socket, SocketRecv, ZmqMessage};

use crate::node::rpc::RpcClient;
use crate::node::tip::{report_tip, Update};
use tokio_util::task::TaskTracker;

/// Decodes one `hashblock` message; `None` for any other topic or a malformed body.
pub fn decode_hashblock(message: &ZmqMessage) -> Option<BlockHash> {
    let topic = message.get(0)?;
    if topic.as_ref() != b"hashblock" {
        return None;
    }
    let body = message.get(1)?;
    let mut bytes: [u8; 32] = body.as_ref().try_into().ok()?;
    bytes.reverse(); // display order on the wire, internal order in BlockHash
    Some(BlockHash::from_byte_array(bytes))
}

/// Subscribes to `endpoint` and sends every new tip hash to `tips` until shutdown or until
/// the receiver is gone; reconnects with backoff when the publisher goes away.
pub async fn subscribe_hashblock(
    endpoint: String,
    tips: mpsc::Sender<BlockHash>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(250);
    loop {
        let mut socket = zeromq::SubSocket::new();
        let connected = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = socket.connect(&endpoint) => c,
        };
        if let Err(e) = connected {
            warn!(%endpoint, error = %e, "cannot connect to the node's ZMQ hashblock publisher; retrying");
        } else if let Err(e) = socket.subscribe("hashblock").await {
            warn!(%endpoint, error = %e, "ZMQ subscribe failed; retrying");
        } else {
            info!(%endpoint, "listening for new tips on ZMQ hashblock");
            backoff = Duration::from_millis(250);
            loop {
                let message = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    m = socket.recv() => m,
                };
                match message {
                    Ok(m) => match decode_hashblock(&m) {
                        Some(hash) => {
                            debug!(%hash, "ZMQ hashblock");
                            if tips.send(hash).await.is_err() {
                                return;
                            }
                        }
                        None => debug!("ignoring a ZMQ message that is not hashblock"),
                    },
                    Err(e) => {
                        warn!(%endpoint, error = %e, "ZMQ connection lost; reconnecting");
                        break;
                    }
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// Feeds ZMQ tips to the template publisher.
pub(crate) async fn watch_hashblock(
    endpoint: String,
    rpc: RpcClient,
    updates: mpsc::Sender<Update>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let (tx, mut rx) = mpsc::channel(8);
    tracker.spawn(subscribe_hashblock(endpoint, tx, shutdown.clone()));
    while let Some(hash) = rx.recv().await {
        if !report_tip(&rpc, hash, &updates).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn message(frames: Vec<Vec<u8>>) -> ZmqMessage {
        let frames: Vec<Bytes> = frames.into_iter().map(Bytes::from).collect();
        ZmqMessage::try_from(frames).expect("non-empty")
    }

    #[test]
    fn decodes_core_hashblock_messages() {
        let hash: BlockHash = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"
            .parse()
            .unwrap();
        let body = hex::decode("000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f")
            .unwrap();
        let m = message(vec![
            b"hashblock".to_vec(),
            body,
            7u32.to_le_bytes().to_vec(),
        ]);
        assert_eq!(decode_hashblock(&m), Some(hash));
        assert_eq!(
            decode_hashblock(&message(vec![b"rawtx".to_vec(), vec![0; 32]])),
            None
        );
        assert_eq!(
            decode_hashblock(&message(vec![b"hashblock".to_vec(), vec![0; 31]])),
            None
        );
    }

    #[tokio::test]
    async fn subscriber_receives_hashes_from_a_zmq_publisher() {
        use zeromq::SocketSend;
        let mut publisher = zeromq::PubSocket::new();
        let endpoint = publisher
            .bind("tcp://127.0.0.1:0")
            .await
            .expect("bind loopback");
        let shutdown = CancellationToken::new();
        let (tx, mut rx) = mpsc::channel(8);
        tokio::spawn(subscribe_hashblock(
            endpoint.to_string(),
            tx,
            shutdown.clone(),
        ));
        let hash = BlockHash::from_byte_array([0x42; 32]);
        let mut body = hash.to_byte_array();
        body.reverse();
        // PUB drops messages until the subscription has arrived: publish until one lands.
        let got = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let _ = publisher
                    .send(message(vec![b"rawtx".to_vec(), vec![1, 2, 3]]))
                    .await;
                let _ = publisher
                    .send(message(vec![
                        b"hashblock".to_vec(),
                        body.to_vec(),
                        1u32.to_le_bytes().to_vec(),
                    ]))
                    .await;
                if let Ok(Some(h)) =
                    tokio::time::timeout(Duration::from_millis(100), rx.recv()).await
                {
                    return h;
                }
            }
        })
        .await
        .expect("hash received within 10 s");
        assert_eq!(got, hash);
        shutdown.cancel();
    }
}
