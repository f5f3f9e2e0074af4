//! Stratum V2 transport shared by every SV2 peer we run or talk to: authority keys and a
//! Noise-encrypted, framed connection. The wire work itself is done by the reference
//! implementation's crates (`noise_sv2`, `codec_sv2`), so what we send is exactly what the
//! reference pool reads.

pub mod client;
pub mod conn;
pub mod keys;

pub use self::conn::{accept, connect, connect_at, Frame, NoiseReader, NoiseWriter, Sv2Error};
pub use self::keys::{AuthorityKeypair, AuthorityPublicKey, KeyError};
