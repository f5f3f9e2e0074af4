//! Why a session ended, and whose doing it was; and how a session leaves when the proxy stops.

use std::time::{Duration, Instant};

use mining_types::Side;

use super::{hand_on, Deadline, Now, Session};
use crate::sv1::codec::render;
use crate::sv1::conn::{ConnError, Connection};
use crate::upstream::shares::ShareRoute;

fn late(d: Deadline) -> &'static str {
    match d {
        Deadline::FirstMessage(_) => "no first message in time",
        Deadline::Handshake(_) => "did not subscribe and authorize in time",
        Deadline::Idle(_) => "no request for the idle timeout",
    }
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionEnd {
    /// The miner closed the connection.
    #[error("closed by the miner")]
    Closed,
    /// The proxy is stopping.
    #[error("proxy shutting down")]
    Shutdown,
    /// A line too long, or the socket failed.
    #[error(transparent)]
    Conn(ConnError),
    /// Something that is not Stratum.
    #[error("not Stratum ({reason}): {start:?}")]
    NotStratum {
        /// The parser's complaint.
        reason: String,
        /// The line's first bytes.
        start: String,
    },
    /// The miner missed a deadline: no first message, no subscribe and authorize, or no
    /// request for the idle timeout.
    #[error("{}", late(*.0))]
    Late(Deadline),
    /// More requests than the budget allows.
    #[error("more than {0} requests a second")]
    Flood(u32),
    /// The miner does not read what we send.
    #[error("write timed out")]
    WriteTimeout,
    /// Writing failed.
    #[error("write failed: {0}")]
    Write(std::io::Error),
    /// Every extranonce1 value is taken by a live connection.
    #[error("no free extranonce1 (stratum.extranonce1_bytes is too small for this many miners)")]
    ExtranonceSpace,
    /// The job publisher stopped.
    #[error("job source stopped")]
    JobsStopped,
}

impl SessionEnd {
    /// Whose doing the end was.
    pub fn side(&self) -> Side {
        match self {
            SessionEnd::Shutdown | SessionEnd::ExtranonceSpace | SessionEnd::JobsStopped => {
                Side::Local
            }
            _ => Side::Miner,
        }
    }
}

/// When the proxy stops, a session still reads for this long after the miner's last line...
const DRAIN_QUIET: Duration = Duration::from_millis(50);
/// ... and for this long at most, however much keeps coming.
const DRAIN_MAX: Duration = Duration::from_millis(250);

/// The proxy stops: what the miner had already sent is answered and handed on (a share, maybe
/// a block; the subscribe of a miner accepted just as the socket went to the next version),
/// then a mining miner is asked back to the same address in a moment, where the next process
/// takes it over.
pub(super) async fn leave(conn: &mut Connection, session: &mut Session, route: &mut ShareRoute) {
    let until = Instant::now() + DRAIN_MAX;
    loop {
        let quiet = until.min(Instant::now() + DRAIN_QUIET);
        let Ok(Ok(line)) = tokio::time::timeout_at(quiet.into(), conn.read_line()).await else {
            break;
        };
        let handled = session.handle_line(&line, Now::current());
        hand_on(session, route);
        if handled.is_err() {
            break;
        }
    }
    if session.is_mining() {
        if let Some(addr) = conn.local_addr() {
            let wait = session.shared.sv1.reconnect_wait.as_secs();
            let wait = u32::try_from(wait).unwrap_or(u32::MAX);
            render::reconnect(&mut session.out, &addr.ip().to_string(), addr.port(), wait);
        }
    }
}
