//! One miner's connection: connecting, then a loop that feeds server lines, found shares and
//! handshake timeouts to the [`Session`] state machine.
//!
//! - [`line_reader`]: bounded, cancel-safe line framing;
//! - [`state`]: the session's state, its handshake and the routing of server lines;
//! - [`replies`]: replies to the miner's own requests;
//! - [`server_methods`]: requests and notifications from the server;
//! - [`jobs`]: jobs handed to the hashing thread, and the shares it finds;
//! - [`parse`]: pure helpers for JSON-RPC fields.

mod jobs;
mod line_reader;
mod parse;
mod replies;
mod server_methods;
mod state;

use crate::hasher::{self, StopOnDrop, WorkSlot};
use crate::{MinerConfig, MinerEvent, Stats, CONNECT_TIMEOUT, MAX_LINE_LEN};
use anyhow::{anyhow, Context, Result};
use line_reader::LineReader;
use state::Session;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

/// Shares queued between the hashing thread and the connection before hashing blocks.
const FOUND_QUEUE: usize = 256;

/// How a connection ended.
enum End {
    Closed(String),
    /// The server asked for a reconnect to this address after this wait.
    Reconnect(SocketAddr, std::time::Duration),
}

/// Runs one miner to its end and always reports it with a final `Disconnected`.
pub(crate) async fn run(
    mut config: MinerConfig,
    shutdown: CancellationToken,
    events: UnboundedSender<MinerEvent>,
    stats: Arc<Stats>,
) {
    let reason = loop {
        match session(&config, &shutdown, &events, &stats).await {
            Ok(End::Closed(reason)) => break reason,
            Err(e) => break format!("{e:#}"),
            Ok(End::Reconnect(to, wait)) => {
                tracing::info!(user = %config.user, %to, ?wait, "reconnecting as the server asked");
                let _ = events.send(MinerEvent::Reconnecting { to, wait });
                tokio::select! {
                    () = shutdown.cancelled() => break "shutdown".into(),
                    () = tokio::time::sleep(wait) => {}
                }
                config.server = to;
            }
        }
    };
    tracing::debug!(user = %config.user, %reason, "miner disconnected");
    let _ = events.send(MinerEvent::Disconnected { reason });
}

/// Connects, retrying for a while when asked to reconnect: the new server may be a moment away.
async fn connect_retrying(config: &MinerConfig) -> Result<TcpStream> {
    let give_up = Instant::now() + CONNECT_TIMEOUT;
    loop {
        match connect(config).await {
            Ok(s) => return Ok(s),
            Err(e) if !config.follow_reconnect || Instant::now() >= give_up => return Err(e),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
}

async fn connect(config: &MinerConfig) -> Result<TcpStream> {
    let server = config.server;
    let attempt = async {
        match config.bind_ip {
            Some(ip) => {
                let socket = if ip.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                socket.bind(SocketAddr::new(ip, 0))?;
                socket.connect(server).await
            }
            None => TcpStream::connect(server).await,
        }
    };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, attempt)
        .await
        .map_err(|_| anyhow!("connect to {server}: timed out"))?
        .with_context(|| format!("connect to {server}"))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

async fn session(
    config: &MinerConfig,
    shutdown: &CancellationToken,
    events: &UnboundedSender<MinerEvent>,
    stats: &Arc<Stats>,
) -> Result<End> {
    let stream = tokio::select! {
        _ = shutdown.cancelled() => return Ok(End::Closed("shutdown".into())),
        s = connect_retrying(config) => s?,
    };
    let (read_half, write_half) = stream.into_split();
    let mut reader = LineReader::new(read_half, MAX_LINE_LEN);

    let slot = Arc::new(WorkSlot::default());
    let _stop_hasher = StopOnDrop(slot.clone());
    let (found_tx, mut found_rx) = tokio::sync::mpsc::channel(FOUND_QUEUE);
    {
        let slot = slot.clone();
        let stats = stats.clone();
        let max_hashrate = config.max_hashrate;
        std::thread::Builder::new()
            .name(format!("sv1-hash-{}", config.user))
            .spawn(move || hasher::run(&slot, &found_tx, &stats, max_hashrate))
            .context("spawn hashing thread")?;
    }

    let mut s = Session::new(config, write_half, events.clone(), stats.clone(), slot);
    s.advance_handshake().await?;
    loop {
        let wait_deadline = s.wait_deadline;
        if let Some((to, wait)) = s.reconnect.take() {
            return Ok(End::Reconnect(to, wait));
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(End::Closed("shutdown".into())),
            line = reader.next_line() => match line? {
                None => return Ok(End::Closed("connection closed by server".into())),
                Some(line) => s.handle_line(&line).await?,
            },
            Some(found) = found_rx.recv() => s.submit(found).await?,
            _ = sleep_until_opt(wait_deadline), if wait_deadline.is_some() => s.handshake_timeout().await?,
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    if let Some(d) = deadline {
        tokio::time::sleep_until(d.into()).await;
    }
}
