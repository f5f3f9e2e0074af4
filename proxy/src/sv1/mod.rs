//! The Stratum V1 server that ASICs connect to.
//!
//! [`server`] accepts and limits connections; [`session`] runs one task per miner over a
//! [`conn::Connection`] that owns the bytes; [`codec`] turns lines into typed requests and
//! renders every reply; [`vardiff`] keeps each miner at a steady share rate; [`extranonce`]
//! gives each connection its own extranonce1.

pub mod admission;
pub mod codec;
pub mod conn;
pub mod extranonce;
pub mod server;
pub mod session;
pub mod vardiff;

use std::sync::Arc;
use std::time::Duration;

use mining_types::ExtranonceLayout;

use self::extranonce::Extranonce1Allocator;
use self::vardiff::VardiffConfig;
use crate::blocks::BlockSink;
use crate::metrics::Stats;
use crate::upstream::shares::Links;

/// Settings of the miner-facing server.
#[derive(Debug, Clone)]
pub struct Sv1Config {
    /// Connections beyond this are refused.
    pub max_connections: usize,
    /// A longer line cuts the connection off.
    pub max_line_bytes: usize,
    /// Time a new connection has to send its first request.
    pub first_message_timeout: Duration,
    /// Time a new connection has to subscribe and authorize.
    pub handshake_timeout: Duration,
    /// Requests a connection may send per second (bursts of five seconds' worth).
    pub max_requests_per_sec: u32,
    /// Time without a line from the miner before it is cut off.
    pub idle_timeout: Duration,
    /// Time a write to a miner may take before it is cut off.
    pub write_timeout: Duration,
    /// The wait `client.reconnect` asks of miners when the proxy stops.
    pub reconnect_wait: Duration,
    /// How the extranonce is split between us and the miner.
    pub layout: ExtranonceLayout,
    /// The version bits miners may roll (BIP310 negotiation ANDs the miner's mask into it).
    pub version_mask: u32,
    /// How far ahead of the clock a share's ntime may be.
    pub max_ntime_future: Duration,
    /// Per-connection difficulty.
    pub vardiff: VardiffConfig,
}

/// What every session shares.
#[derive(Debug)]
pub struct Shared {
    /// The server's settings.
    pub sv1: Sv1Config,
    /// Extranonce1 values.
    pub extranonces: Arc<Extranonce1Allocator>,
    /// Where found blocks go.
    pub blocks: BlockSink,
    /// The live pool links, for shares on pool jobs.
    pub links: Arc<Links>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Every ASIC's figures.
    pub board: Arc<crate::figures::Board>,
    /// The vardiff settings in force (`sv1.vardiff` at start); a reload sends new ones, and
    /// each session takes them at its next tick.
    pub vardiff: tokio::sync::watch::Receiver<VardiffConfig>,
    /// Descriptors held back for blocks: no connection is accepted while they are short.
    pub fds: Arc<template_provider::blocks::fds::FdReserve>,
    /// The routes: which one each miner mines for. `None`: a single route and nothing to
    /// track (what tools and tests that run sessions on their own use).
    pub router: Option<Arc<crate::routing::Router>>,
}
