//! What changed between two readings of the config, key by key: what a reload logs. Pure.

use std::fmt;

use figment::value::{Dict, Value};

/// One key whose value differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The dotted key (`vardiff.min_difficulty`); a list (`upstream`) is compared whole.
    pub key: String,
    /// Before, as JSON; `None` when unset.
    pub before: Option<String>,
    /// After, as JSON; `None` when unset.
    pub after: Option<String>,
}

impl Change {
    /// Whether the key lies in `section` (`policy` holds `policy.min_feerate`).
    pub fn in_section(&self, section: &str) -> bool {
        self.key == section
            || self
                .key
                .strip_prefix(section)
                .is_some_and(|rest| rest.starts_with('.'))
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(unset)".into());
        write!(
            f,
            "{}: {} -> {}",
            self.key,
            show(&self.before),
            show(&self.after)
        )
    }
}

/// Every key whose value differs between `before` and `after`, in key order. Tables are
/// compared key by key; lists and scalars whole.
pub fn changes(before: &Value, after: &Value) -> Vec<Change> {
    let mut out = Vec::new();
    walk(Some(before), Some(after), &mut String::new(), &mut out);
    out
}

/// A table as a table; an absent value as an empty one (a table added or removed is compared
/// key by key); anything else as `None`.
fn table(v: Option<&Value>) -> Option<Option<&Dict>> {
    match v {
        Some(Value::Dict(_, d)) => Some(Some(d)),
        None => Some(None),
        Some(_) => None,
    }
}

fn walk(before: Option<&Value>, after: Option<&Value>, key: &mut String, out: &mut Vec<Change>) {
    match (table(before), table(after)) {
        (Some(b), Some(a)) if b.is_some() || a.is_some() => {
            let mut keys: Vec<&String> = b.iter().chain(a.iter()).flat_map(|d| d.keys()).collect();
            keys.sort_unstable();
            keys.dedup();
            for k in keys {
                let len = key.len();
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(k);
                walk(b.and_then(|d| d.get(k)), a.and_then(|d| d.get(k)), key, out);
                key.truncate(len);
            }
        }
        _ => {
            let (b, a) = (before.map(render), after.map(render));
            if b != a {
                out.push(Change {
                    key: key.clone(),
                    before: b,
                    after: a,
                });
            }
        }
    }
}

/// A value as compact JSON.
pub fn render(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| format!("(unprintable: {e})"))
}
