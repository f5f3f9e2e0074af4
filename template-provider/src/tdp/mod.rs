//! The Stratum V2 Template Distribution Protocol server: hands our templates to any SV2 pool or
//! job-declaration client, and turns their solutions into blocks.

pub mod server;
mod session;
pub mod store;
