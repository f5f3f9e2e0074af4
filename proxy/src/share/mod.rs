//! Share checks: from a miner's submitted fields to a verdict, with no I/O.

pub mod difficulty;
pub mod validate;

pub use self::difficulty::{Difficulty, DifficultyError};
pub use self::validate::{check_share, Reject, ShareCheck, Submission, ValidShare};
