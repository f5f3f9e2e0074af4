//! Why a session ended, and whose doing it was.

use mining_types::Side;

use super::Deadline;
use crate::sv1::conn::ConnError;

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
