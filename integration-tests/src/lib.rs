//! Test harness: a real Bitcoin Core regtest node, a key-holding test wallet, the reference SV2
//! peers, and the helpers the tests share.

pub mod node;
pub mod support;
pub mod sv2_peers;
pub mod wallet;
