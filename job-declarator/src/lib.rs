//! Stratum V2 Job Declaration client: the farm tells the pool's Job Declaration Server (JDS)
//! which block it is about to mine, and gets the token the pool's mining connection wants for
//! that job (`SetCustomMiningJob`).
//!
//! - [`queue`]: which job to declare next, and what to do with each answer. Pure: no I/O.
//! - [`client`]: one JDS connection (`AllocateMiningJobToken`, `DeclareMiningJob` with
//!   `ProvideMissingTransactions` answered in line, `PushSolution`).
//! - [`declarer`]: the task that drives the queue over the client, so declaring never holds up
//!   a pool link's shares.

#![warn(missing_docs)]

pub mod client;
pub mod declarer;
pub mod queue;
pub mod tally;

use std::sync::Arc;

use bitcoin::block;
use mining_types::{JobId, Template};

pub use client::{Allocation, JdClient, JdError, SolutionPusher, Token};
pub use declarer::{Declarer, Event, Mode};
pub use queue::DeclarationQueue;
pub use tally::{Tally, TallySnapshot};

/// What a job declaration needs of a job.
#[derive(Debug, Clone)]
pub struct Declarable {
    /// Our job id; the answer names it.
    pub id: JobId,
    /// The header version the job is mined at (the pool checks the custom job against it).
    pub version: block::Version,
    /// The coinbase's witness serialization up to the extranonce push, and after it.
    pub coinbase_prefix: Vec<u8>,
    /// See [`coinbase_prefix`](Self::coinbase_prefix).
    pub coinbase_suffix: Vec<u8>,
    /// The transactions; in full-template mode their wtxids are listed and any the JDS lacks
    /// are sent on request.
    pub template: Arc<Template>,
}
