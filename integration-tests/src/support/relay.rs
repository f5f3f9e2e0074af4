//! A TCP relay that sits between jd-proxy and one of its peers (pool, JDS, node RPC, template
//! provider) and forwards bytes faithfully until a test tells it to misbehave.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Live connections beyond this are refused, so a runaway client cannot exhaust descriptors.
const MAX_LIVE: usize = 1024;
/// Largest chunk read (and so held) per direction; this is all the relay ever buffers.
const CHUNK: usize = 64 * 1024;

/// How the relay treats traffic; see [`Relay::set`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward normally.
    Pass,
    /// Hold each chunk this long before forwarding it, both ways.
    Delay(Duration),
    /// Forward nothing in either direction; every socket stays open.
    Stall,
    /// Accept new connections and close them at once; live ones are untouched.
    Refuse,
    /// Stop forwarding client→target and shut that direction down (the target sees EOF);
    /// target→client keeps flowing. A FIN cannot be taken back, so connections half-closed
    /// this way stay so after `Pass`; new ones are normal again.
    HalfOpen,
}

/// A relay listening on a free loopback port; stops and closes every socket when dropped.
pub struct Relay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

struct Shared {
    fault: watch::Sender<Fault>,
    /// Held by every live connection; `cut` cancels it and puts a fresh one in its place.
    cut: Mutex<CancellationToken>,
    live: AtomicUsize,
    accepted: AtomicU64,
}

impl Relay {
    /// Listens on `127.0.0.1:0` and forwards each connection to `target`.
    ///
    /// # Errors
    /// The listener cannot be bound.
    pub async fn start(target: SocketAddr) -> anyhow::Result<Relay> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .context("bind the relay")?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let shared = Arc::new(Shared {
            fault: watch::Sender::new(Fault::Pass),
            cut: Mutex::new(shutdown.child_token()),
            live: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
        });
        let tracker = TaskTracker::new();
        tracker.spawn(accept_loop(
            listener,
            target,
            Arc::clone(&shared),
            shutdown.clone(),
            tracker.clone(),
        ));
        Ok(Relay {
            addr,
            shared,
            shutdown,
            tracker,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Applies `fault` to live and new connections. Bytes held by `Stall` or `Delay` are
    /// forwarded, in order, once the fault allows it again.
    pub fn set(&self, fault: Fault) {
        self.shared.fault.send_replace(fault);
    }

    /// Closes every live connection now; both ends see EOF (or a reset when they had unread
    /// bytes in the relay). New connections are served as usual.
    pub fn cut(&self) {
        let mut cut = self
            .shared
            .cut
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *cut, self.shutdown.child_token()).cancel();
    }

    /// Connections being forwarded now.
    pub fn connections(&self) -> usize {
        self.shared.live.load(Ordering::SeqCst)
    }

    /// Connections accepted since start, refused ones included.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.tracker.close();
    }
}

/// Counts a connection as live for as long as its task holds it, however the task ends.
struct Live(Arc<Shared>);

impl Live {
    fn new(shared: &Arc<Shared>) -> Live {
        shared.live.fetch_add(1, Ordering::SeqCst);
        Live(Arc::clone(shared))
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let client = match accepted {
            Ok((client, _)) => client,
            Err(e) => {
                // Out of descriptors and the like: back off rather than spin on the error.
                tracing::debug!("relay accept failed: {e}");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(10)) => continue,
                }
            }
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let refuse = *shared.fault.borrow() == Fault::Refuse;
        if refuse || shared.live.load(Ordering::SeqCst) >= MAX_LIVE {
            continue; // dropping `client` closes it
        }
        let live = Live::new(&shared);
        let stop = shared
            .cut
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        tracker.spawn(serve(client, target, shared.fault.subscribe(), stop, live));
    }
}

/// Forwards one connection until both directions end, one fails, or `stop` (cut or drop).
async fn serve(
    client: TcpStream,
    target: SocketAddr,
    fault: watch::Receiver<Fault>,
    stop: CancellationToken,
    live: Live,
) {
    let forward = async {
        let upstream = TcpStream::connect(target).await?;
        // Small protocol messages must not wait on Nagle: the relay would add latency of its own.
        client.set_nodelay(true)?;
        upstream.set_nodelay(true)?;
        let (client_rx, client_tx) = client.into_split();
        let (target_rx, target_tx) = upstream.into_split();
        tokio::try_join!(
            pump(client_rx, target_tx, Dir::Up, fault.clone()),
            pump(target_rx, client_tx, Dir::Down, fault),
        )
    };
    tokio::select! {
        () = stop.cancelled() => {}
        done = forward => if let Err(e) = done {
            tracing::debug!("relay connection to {target} ended: {e}");
        },
    }
    drop(live);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    /// Client to target.
    Up,
    /// Target to client.
    Down,
}

/// Moves one direction in chunks, reading the next only once the last is fully written, so a
/// held direction pushes back on its sender through TCP instead of piling up here.
async fn pump(
    mut src: OwnedReadHalf,
    mut dst: OwnedWriteHalf,
    dir: Dir,
    mut fault: watch::Receiver<Fault>,
) -> io::Result<()> {
    let mut buf = vec![0; CHUNK];
    loop {
        if !open(dir, None, &mut fault).await? {
            return shut(&mut dst).await;
        }
        // Waiting on the fault too: a change must act now, not after the next read.
        let n = tokio::select! {
            read = src.read(&mut buf) => read?,
            changed = fault.changed() => {
                changed.map_err(stopped)?;
                continue;
            }
        };
        let read_at = Instant::now();
        if n == 0 {
            // EOF is held like data, so a stalled direction does not half-close early.
            open(dir, Some(read_at), &mut fault).await?;
            return shut(&mut dst).await;
        }
        let mut sent = 0;
        while sent < n {
            if !open(dir, Some(read_at), &mut fault).await? {
                return shut(&mut dst).await;
            }
            // A partial write keeps its place, so a fault set mid-chunk holds the rest.
            tokio::select! {
                written = dst.write(&buf[sent..n]) => match written? {
                    0 => return Err(io::ErrorKind::WriteZero.into()),
                    w => sent += w,
                },
                changed = fault.changed() => changed.map_err(stopped)?,
            }
        }
    }
}

/// Waits until `dir` may move bytes read at `read_at` (`None`: before reading); `false` when
/// the direction is to be shut for good.
async fn open(
    dir: Dir,
    read_at: Option<Instant>,
    fault: &mut watch::Receiver<Fault>,
) -> io::Result<bool> {
    loop {
        let due = match *fault.borrow_and_update() {
            Fault::HalfOpen if dir == Dir::Up => return Ok(false),
            Fault::Stall => None,
            Fault::Delay(delay) => match read_at.map(|t| t + delay) {
                Some(due) if due > Instant::now() => Some(due),
                _ => return Ok(true),
            },
            Fault::Pass | Fault::Refuse | Fault::HalfOpen => return Ok(true),
        };
        let held = async {
            match due {
                Some(due) => tokio::time::sleep_until(due).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = held => return Ok(true),
            changed = fault.changed() => changed.map_err(stopped)?,
        }
    }
}

async fn shut(dst: &mut OwnedWriteHalf) -> io::Result<()> {
    // The peer may be gone already; the other direction will see that and end the connection.
    let _ = dst.shutdown().await;
    Ok(())
}

fn stopped(_: watch::error::RecvError) -> io::Error {
    io::Error::other("relay stopped")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::support::{bounded, wait_until};
    use anyhow::ensure;
    use tokio::io::AsyncRead;

    const LIMIT: Duration = Duration::from_secs(10);

    /// Echoes every connection back until the client's EOF.
    async fn echo_server() -> anyhow::Result<SocketAddr> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut rx, mut tx) = conn.split();
                    if tokio::io::copy(&mut rx, &mut tx).await.is_ok() {
                        let _ = tx.shutdown().await;
                    }
                });
            }
        });
        Ok(addr)
    }

    async fn relay_to_echo() -> anyhow::Result<(Relay, TcpStream)> {
        let relay = Relay::start(echo_server().await?).await?;
        let client = TcpStream::connect(relay.addr()).await?;
        Ok((relay, client))
    }

    async fn round_trip(stream: &mut TcpStream, msg: &[u8]) -> anyhow::Result<()> {
        stream.write_all(msg).await?;
        let mut back = vec![0; msg.len()];
        stream.read_exact(&mut back).await?;
        ensure!(back == msg, "echo came back altered");
        Ok(())
    }

    /// Whether the peer closed (EOF or reset) within a couple of seconds.
    async fn closed(stream: &mut TcpStream) -> bool {
        let mut byte = [0; 1];
        let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut byte)).await;
        matches!(read, Ok(Ok(0) | Err(_)))
    }

    /// Whether nothing (not even EOF) arrives for `quiet`.
    async fn silent(rx: &mut (impl AsyncRead + Unpin), quiet: Duration) -> bool {
        let mut byte = [0; 1];
        tokio::time::timeout(quiet, rx.read(&mut byte))
            .await
            .is_err()
    }

    /// Several chunks' worth of bytes whose order is visible.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn passes_bytes_through_both_ways() {
        bounded(LIMIT, async {
            let (relay, mut client) = relay_to_echo().await?;
            round_trip(&mut client, b"hello").await?;
            let data = pattern(5 * CHUNK + 17);
            let (mut rx, mut tx) = client.split();
            let mut back = vec![0; data.len()];
            let (sent, read) = tokio::join!(tx.write_all(&data), rx.read_exact(&mut back));
            sent?;
            read?;
            ensure!(back == data, "bytes reordered or altered");
            ensure!(relay.accepted() == 1 && relay.connections() == 1);
            Ok(())
        })
        .await;
    }

    #[tokio::test]
    async fn delay_slows_a_round_trip() {
        bounded(LIMIT, async {
            let (relay, mut client) = relay_to_echo().await?;
            round_trip(&mut client, b"warm").await?;
            let delay = Duration::from_millis(150);
            relay.set(Fault::Delay(delay));
            let start = Instant::now();
            round_trip(&mut client, b"slow").await?;
            let rtt = start.elapsed();
            ensure!(rtt >= delay, "round trip took {rtt:?}, under {delay:?}");
            relay.set(Fault::Pass);
            round_trip(&mut client, b"fast again").await
        })
        .await;
    }

    #[tokio::test]
    async fn stall_holds_bytes_until_pass() {
        bounded(LIMIT, async {
            let (relay, mut client) = relay_to_echo().await?;
            round_trip(&mut client, b"warm").await?;
            relay.set(Fault::Stall);
            let data = pattern(4 * CHUNK + 3);
            let (mut rx, mut tx) = client.split();
            let read = async {
                let quiet = silent(&mut rx, Duration::from_millis(300)).await;
                let live = relay.connections();
                relay.set(Fault::Pass);
                let mut back = vec![0; data.len()];
                rx.read_exact(&mut back).await?;
                anyhow::Ok((quiet, live, back))
            };
            let (sent, read) = tokio::join!(tx.write_all(&data), read);
            sent?;
            let (quiet, live, back) = read?;
            ensure!(quiet, "bytes got through a stall");
            ensure!(live == 1, "stall closed the connection");
            ensure!(back == data, "held bytes lost or reordered");
            Ok(())
        })
        .await;
    }

    #[tokio::test]
    async fn refuse_closes_new_connections_only() {
        bounded(LIMIT, async {
            let (relay, mut live) = relay_to_echo().await?;
            round_trip(&mut live, b"before").await?;
            relay.set(Fault::Refuse);
            let mut refused = TcpStream::connect(relay.addr()).await?;
            ensure!(closed(&mut refused).await, "refused connection stayed open");
            round_trip(&mut live, b"still served").await?;
            ensure!(relay.accepted() == 2 && relay.connections() == 1);
            relay.set(Fault::Pass);
            let mut again = TcpStream::connect(relay.addr()).await?;
            round_trip(&mut again, b"after").await
        })
        .await;
    }

    #[tokio::test]
    async fn cut_closes_live_connections() {
        bounded(LIMIT, async {
            let (relay, mut client) = relay_to_echo().await?;
            round_trip(&mut client, b"before").await?;
            relay.cut();
            ensure!(
                closed(&mut client).await,
                "client still connected after cut"
            );
            let relay_ref = &relay;
            let gone = wait_until(Duration::from_secs(2), || async move {
                relay_ref.connections() == 0
            });
            ensure!(gone.await, "cut connection still counted");
            let mut next = TcpStream::connect(relay.addr()).await?;
            round_trip(&mut next, b"after").await
        })
        .await;
    }

    #[tokio::test]
    async fn half_open_passes_only_target_to_client() {
        bounded(LIMIT, async {
            let target = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
            let relay = Relay::start(target.local_addr()?).await?;
            let mut client = TcpStream::connect(relay.addr()).await?;
            let (mut upstream, _) = target.accept().await?;
            relay.set(Fault::HalfOpen);
            client.write_all(b"dropped").await?;
            let mut got = Vec::new();
            upstream.read_to_end(&mut got).await?;
            ensure!(got.is_empty(), "client bytes reached the target: {got:?}");
            upstream.write_all(b"still flows").await?;
            let mut back = [0; 11];
            client.read_exact(&mut back).await?;
            ensure!(&back == b"still flows");
            Ok(())
        })
        .await;
    }

    #[tokio::test]
    async fn drop_stops_tasks_and_closes_sockets() {
        bounded(LIMIT, async {
            let (relay, mut client) = relay_to_echo().await?;
            round_trip(&mut client, b"before").await?;
            let (tracker, addr) = (relay.tracker.clone(), relay.addr());
            drop(relay);
            tracker.wait().await;
            ensure!(
                closed(&mut client).await,
                "client still connected after drop"
            );
            ensure!(
                TcpStream::connect(addr).await.is_err(),
                "relay still listening"
            );
            Ok(())
        })
        .await;
    }
}
