//! Hashrate routing: which upstreams an ASIC mines for. Routes send ASICs by worker-name
//! pattern, by source network, or by weight across pools; each route fails over on its own.
//!
//! [`rules`] places an ASIC and [`split`] keeps the weighted routes at their shares (both pure);
//! [`router`] holds the routes at run time and moves ASICs between weighted ones; [`wiring`]
//! starts each route's publisher and supervisor.

pub mod router;
pub mod rules;
pub mod split;
pub(crate) mod wiring;

pub use self::router::{Router, Seat};
