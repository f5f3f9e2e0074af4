//! Why a session ended, and whose doing it was.

use mining_types::Side;

use crate::sv1::conn::ConnError;

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
    /// Nothing from the miner within the timeout.
    #[error("no message for {0}s")]
    Silent(u64),
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
