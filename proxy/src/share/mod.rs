//! Share checks: from a miner's submitted fields to a verdict, with no I/O.

pub mod validate;

pub use mining_types::{Difficulty, DifficultyError};

pub use self::validate::{check_share, Reject, ShareCheck, Submission, ValidShare};
