//! Test harness: a real Bitcoin Core regtest node and a key-holding test wallet.

pub mod node;
pub mod proxy;
pub mod sv2_peers;
pub mod wallet;
