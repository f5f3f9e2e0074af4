//! The mining domain as types: what a block template is, how its coinbase is split around the
//! extranonce miners roll, how a solved share becomes a block, and the units and ids that pass
//! between the proxy, the template provider and the job declarator.
//!
//! Pure: no I/O, no async runtime. Every other crate of the workspace builds on this one, and
//! this one builds only on [`bitcoin`].
//!
//! Invalid values are kept out by construction, in the manner of rust-bitcoin's units: a
//! [`Difficulty`] is finite and positive, an [`ExtranonceLayout`] fits every known firmware,
//! and ids are distinct types so a pool's job id is never taken for ours.

#![warn(missing_docs)]

pub mod coinbase;
pub mod difficulty;
pub mod extranonce;
pub mod ids;
pub mod merkle;
pub mod side;
pub mod solution;
pub mod template;

pub use coinbase::{CoinbaseConfig, CoinbaseError, CoinbaseSplit};
pub use difficulty::{Difficulty, DifficultyError};
pub use extranonce::{Extranonce1, Extranonce2, ExtranonceLayout, LayoutError};
pub use ids::{ChannelId, JobId, PoolJobId, TemplateId};
pub use side::Side;
pub use solution::{Solution, SolutionError};
pub use template::{block_subsidy, NextBlock, Template, TemplateKind, TemplateTx};
