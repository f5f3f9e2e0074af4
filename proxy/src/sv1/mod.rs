//! The Stratum V1 server that ASICs connect to.
//!
//! [`server`] accepts and limits connections, [`session`] runs one task per miner over a
//! [`conn::Connection`] that owns the bytes, [`codec`] turns lines into requests, and
//! [`vardiff`] keeps each miner at a steady share rate.

pub mod codec;
pub mod conn;
pub mod server;
pub mod session;
pub mod vardiff;

use std::time::Duration;

use self::vardiff::VardiffConfig;
use crate::job::ExtranonceLayout;

/// Settings of the miner-facing server.
#[derive(Debug, Clone)]
pub struct Sv1Config {
    pub max_connections: usize,
    pub max_line_bytes: usize,
    /// Time a new connection has to send its first line.
    pub first_message_timeout: Duration,
    /// Time without a line from the miner before it is cut off.
    pub idle_timeout: Duration,
    /// Time a write to a miner may take before it is cut off.
    pub write_timeout: Duration,
    pub layout: ExtranonceLayout,
    /// The version bits miners may roll (BIP310 negotiation ANDs the miner's mask into it).
    pub version_mask: u32,
    /// How far ahead of the clock a share's ntime may be.
    pub max_ntime_future: Duration,
    pub vardiff: VardiffConfig,
}
