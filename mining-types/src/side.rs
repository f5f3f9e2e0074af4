//! Which side of the proxy an error came from.
//!
//! The side picks the action (after pingora's `ErrorSource`): a miner's fault closes that one
//! session; a pool's or JDS's means failing over; a node's means keeping the last template and
//! retrying; a local one is logged and counted. Logs carry the side, so an operator can tell
//! "the pool refused" from "our disk is full" at a glance.

use std::fmt;

/// Where a failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// An ASIC (or anything else on the Stratum V1 port).
    Miner,
    /// A pool's mining connection.
    Pool,
    /// A pool's Job Declaration Server.
    Jds,
    /// The farm's Bitcoin node, or a template provider standing in for it.
    Node,
    /// This process: its disk, its limits, a bug.
    Local,
}

impl Side {
    /// The name logs and metrics use.
    pub const fn as_str(self) -> &'static str {
        match self {
            Side::Miner => "miner",
            Side::Pool => "pool",
            Side::Jds => "jds",
            Side::Node => "node",
            Side::Local => "local",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
