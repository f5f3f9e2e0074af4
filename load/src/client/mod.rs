//! One simulated miner: one task and one socket, no thread and no hashing loop of its own.
//!
//! `sv1-miner` spawns an OS thread per miner for hashing and builds a `serde_json::Value` tree
//! per line; at 15,000 connections on two cores that costs more than the server under test.
//! This client borrows from each line instead, keeps a 4 KiB read buffer, and only hashes in
//! `shares` mode, when it grinds a share the moment one is due: at the very low share
//! difficulties a load run uses (about 1e-9: some 4 header hashes a share) that is cheaper than
//! keeping a precomputed stock fresh across jobs.
//!
//! - `shared`: what every connection and the driver share: settings, counters, seen tips;
//! - `conn`: the connection loop and its I/O;
//! - `protocol`: the handshake and the server's lines;
//! - `pacing`: when shares are due;
//! - `work`: the job a connection grinds on, and its shares.

mod conn;
mod pacing;
mod protocol;
mod shared;
mod work;

pub use pacing::Pace;
pub use shared::{ClientConfig, Mode, Shared, Stats, TipSeen};

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpSocket;

use conn::Conn;

/// Runs one miner until shutdown or until the server ends the connection.
pub async fn run(idx: u32, bind: Option<IpAddr>, shared: Arc<Shared>) {
    let stats = &shared.stats;
    stats.attempted.fetch_add(1, Relaxed);
    let t0 = Instant::now();
    let connect = async {
        let server = shared.config.server;
        let socket = if server.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = bind {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        socket.connect(server).await
    };
    let stream = tokio::select! {
        _ = shared.shutdown.cancelled() => return,
        r = tokio::time::timeout(shared.config.connect_timeout, connect) => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return fail(stats, format!("connect: {}", e.kind())),
            Err(_) => return fail(stats, "connect: timed out".into()),
        },
    };
    stats.tcp_connect.record(t0.elapsed());
    let _ = stream.set_nodelay(true);
    let mut conn = Conn::new(idx, stream, shared.clone(), t0);
    let result = conn.run().await;
    if conn.mining {
        stats.live.fetch_sub(1, Relaxed);
        if let Err(reason) = result {
            stats.dropped.fetch_add(1, Relaxed);
            Stats::bump(&stats.drops, reason);
        }
    } else {
        let Err(reason) = result else {
            return; // shut down before the handshake finished
        };
        fail(stats, format!("handshake: {reason}"));
    }
}

fn fail(stats: &Stats, reason: String) {
    stats.failed.fetch_add(1, Relaxed);
    Stats::bump(&stats.failures, reason);
}
