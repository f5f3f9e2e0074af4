//! jd-load: many light Stratum V1 miners against one server, to measure what a farm-sized
//! gateway must do: hold thousands of idle connections in little memory, move every miner to a
//! new tip fast, and check shares at a high rate.
//!
//! - [`client`]: one task per simulated miner (no thread, a borrowed-JSON line parser);
//! - [`driver`]: one run, phase by phase: ramp, share phase, tips, and the report;
//! - [`node`]: mines a block through the node's RPC and reads the node's own time of the tip;
//! - [`histogram`], [`procfs`], [`report`]: the figures;
//! - [`soak`]: a long run's samples of the server, and whether its memory and descriptors
//!   stayed flat;
//! - [`synth_gbt`]: a synthetic full-size `getblocktemplate` reply, for benchmarks.

pub mod client;
pub mod driver;
pub mod histogram;
pub mod node;
pub mod procfs;
pub mod report;
pub mod soak;
pub mod synth_gbt;
