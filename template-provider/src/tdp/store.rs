//! Recent templates by id: a client may ask for the transactions of, or submit a solution on,
//! any template it was sent that is still on the current tip or just before it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use mining_types::{Template, TemplateId};

/// How many templates are kept: enough for every update of a tip and the previous tip.
const KEEP: usize = 64;

/// A bounded, shared map of recent templates.
#[derive(Debug, Default)]
pub struct TemplateStore {
    recent: Mutex<VecDeque<Arc<Template>>>,
}

impl TemplateStore {
    /// Keeps `t`, dropping the oldest past the bound.
    pub fn insert(&self, t: Arc<Template>) {
        let mut recent = self
            .recent
            .lock()
            .expect("store lock is never poisoned: no panics under it");
        if recent.iter().any(|x| x.id == t.id) {
            return;
        }
        if recent.len() >= KEEP {
            recent.pop_front();
        }
        recent.push_back(t);
    }

    /// The template `id`, if still kept.
    pub fn get(&self, id: TemplateId) -> Option<Arc<Template>> {
        let recent = self
            .recent
            .lock()
            .expect("store lock is never poisoned: no panics under it");
        recent.iter().rev().find(|t| t.id == id).cloned()
    }
}
