//! The Stratum V2 Template Distribution Protocol: a server that hands our templates to any SV2
//! pool or job-declaration client, and a client that takes templates from any SV2 Template
//! Provider (ours or the C++ sv2-tp).

pub mod client;
pub mod messages;
pub mod server;
mod session;
pub mod store;

/// The protocol version both sides speak.
pub const TDP_VERSION: u16 = 2;
