//! What happened, newest last: failovers, blocks and their fates, node and policy changes. A
//! bounded ring, for the API and the dashboard; the log has the same events.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use serde::Serialize;

/// Events kept.
pub const KEPT: usize = 1_000;

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Numbered from 1, so a reader can ask for what came after the last it saw.
    pub seq: u64,
    /// Unix seconds.
    pub at: u64,
    /// What.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// Mining moved: to a pool (declaring the farm's jobs or mining the pool's own) or solo.
    Upstream {
        /// `solo`, `declared`, or `pool_jobs`.
        mode: String,
        /// The pool's name, when not solo.
        pool: Option<String>,
        /// Why.
        reason: String,
        /// The route that moved, when the farm has more than one.
        #[serde(skip_serializing_if = "Option::is_none")]
        route: Option<String>,
    },
    /// A share met the network target.
    BlockFound {
        /// The block hash.
        hash: String,
        /// Its height.
        height: u32,
        /// Who found it.
        worker: String,
    },
    /// A node or the pool judged a block.
    BlockFate {
        /// The block hash.
        hash: String,
        /// Which node or pool.
        by: String,
        /// `accepted`, `inconclusive`, `rejected: ...`, ...
        fate: String,
    },
    /// The node serving templates changed, or none answers.
    Node {
        /// The node's name, or `none`.
        node: String,
    },
    /// The farm's policy or vardiff settings were reloaded.
    Reload {
        /// What changed.
        what: String,
    },
}

/// The ring of recent events.
#[derive(Debug, Default)]
pub struct Events {
    ring: Mutex<(u64, VecDeque<Event>)>,
}

impl Events {
    /// Records `kind` now.
    pub fn push(&self, kind: EventKind) {
        let at = crate::figures::unix_now();
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        ring.0 += 1;
        let seq = ring.0;
        if ring.1.len() >= KEPT {
            ring.1.pop_front();
        }
        ring.1.push_back(Event { seq, at, kind });
    }

    /// The events after `seq` (all kept with 0), oldest first.
    pub fn since(&self, seq: u64) -> Vec<Event> {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        ring.1.iter().filter(|e| e.seq > seq).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_and_numbers_them() {
        let e = Events::default();
        for n in 0..KEPT + 5 {
            e.push(EventKind::Node {
                node: n.to_string(),
            });
        }
        let all = e.since(0);
        assert_eq!(all.len(), KEPT);
        assert_eq!(all[0].seq, 6);
        assert_eq!(e.since(KEPT as u64 + 3).len(), 2);
    }
}
