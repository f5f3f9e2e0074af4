//! The policy in force, replaced when the operator reloads the config (SIGHUP).

use std::sync::Arc;

use tokio::sync::watch;

use super::Policy;

/// The farm's policy in force, shared by every template source: each reads it for each
/// template it builds, and the RPC sources fetch a fresh template as soon as it changes.
/// Cloning shares it.
#[derive(Debug, Clone)]
pub struct LivePolicy(Arc<watch::Sender<Arc<Policy>>>);

impl LivePolicy {
    /// `policy` in force.
    pub fn new(policy: Policy) -> Self {
        LivePolicy(Arc::new(watch::Sender::new(Arc::new(policy))))
    }

    /// The policy in force now.
    pub fn current(&self) -> Arc<Policy> {
        self.0.borrow().clone()
    }

    /// Puts `policy` in force; whether it differs from the one it replaces.
    pub fn replace(&self, policy: Policy) -> bool {
        self.0.send_if_modified(|current| {
            if **current == policy {
                return false;
            }
            *current = Arc::new(policy);
            true
        })
    }

    /// Wakes on each change.
    pub fn changes(&self) -> watch::Receiver<Arc<Policy>> {
        self.0.subscribe()
    }
}

impl Default for LivePolicy {
    fn default() -> Self {
        LivePolicy::new(Policy::default())
    }
}

impl From<Policy> for LivePolicy {
    fn from(policy: Policy) -> Self {
        LivePolicy::new(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hashes::Hash;

    #[test]
    fn a_replaced_policy_is_seen_by_every_clone_and_wakes_readers() {
        let live = LivePolicy::default();
        let reader = live.clone();
        let changes = reader.changes();
        assert!(
            !live.replace(Policy::default()),
            "the same policy is no change"
        );
        assert!(!changes.has_changed().unwrap());
        let p = Policy::new().with_excluded_txid(bitcoin::Txid::all_zeros());
        assert!(live.replace(p.clone()));
        assert!(changes.has_changed().unwrap());
        assert_eq!(*reader.current(), p);
    }
}
