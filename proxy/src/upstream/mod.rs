//! Pool mode: the farm's jobs, declared to the pool's Job Declaration Server and mined on one
//! SV2 extended channel, with failover down an ordered list of pools and, at the end, solo.
//!
//! Shares flow session → [`shares`] (the link's inbox) → [`channel`] (which asks
//! [`custom_jobs`] under which pool job id) → the pool. Jobs flow publisher → every session,
//! and the same jobs → [`channel`] → the JDS. [`supervisor`] picks the pool, following the
//! decisions of [`failover`]; [`pool_jobs`] reads a pool's own jobs when it has no JDS.

pub mod channel;
pub mod custom_jobs;
pub mod failover;
pub mod pool_jobs;
pub mod shares;
pub mod supervisor;

/// Where mining goes now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Blocks pay the farm and go to its node.
    Solo,
    /// Mining for the upstream at `index` of the configured list.
    Pool {
        /// Its place in the list.
        index: usize,
        /// Its name.
        name: String,
    },
}
