//! Setting and removing one key in a value tree, lists of tables included. Pure.

use std::cmp::Ordering;

use figment::value::{Dict, Value};

/// Why an override cannot go where its path says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OverlayError {
    /// The path names a key inside a list without saying which entry.
    #[error("`{list}` is a list of tables: give the entry's index, from 0, before `{key}`")]
    NoIndex {
        /// The list's path.
        list: String,
        /// The key named after it.
        key: String,
    },
    /// The index is past the end of the list plus one.
    #[error(
        "`{list}` has {len} entries: index {index} would leave a gap (the next entry is {len})"
    )]
    Gap {
        /// The list's path.
        list: String,
        /// Its length.
        len: usize,
        /// The index given.
        index: usize,
    },
}

/// An empty table.
pub(super) fn table() -> Value {
    Value::from(Dict::new())
}

/// Sets `path` in `tree` to `value`, making the tables on the way. A number in the path is an
/// entry of a list of tables: an existing entry is changed, the index just past the end adds
/// one, and a single table (`[node]`) counts as a list of one (`[[node]]`).
///
/// # Errors
/// A key inside a list without an index, or an index that leaves a gap.
pub fn set(tree: &mut Value, path: &[String], value: Value) -> Result<(), OverlayError> {
    set_at(tree, path, value, &mut Vec::new())
}

fn set_at(
    tree: &mut Value,
    path: &[String],
    value: Value,
    above: &mut Vec<String>,
) -> Result<(), OverlayError> {
    let Some((first, rest)) = path.split_first() else {
        *tree = value;
        return Ok(());
    };
    if let Ok(index) = first.parse::<usize>() {
        let items = as_list(tree);
        let len = items.len();
        if index > len {
            let list = above.join(".");
            return Err(OverlayError::Gap { list, len, index });
        }
        if index == len {
            items.push(table());
        }
        above.push(first.clone());
        return set_at(&mut items[index], rest, value, above);
    }
    if let Value::Array(..) = tree {
        return Err(OverlayError::NoIndex {
            list: above.join("."),
            key: first.clone(),
        });
    }
    if !matches!(tree, Value::Dict(..)) {
        *tree = table();
    }
    let Value::Dict(_, dict) = tree else {
        unreachable!("made a table just above");
    };
    above.push(first.clone());
    let child = dict.entry(first.clone()).or_insert_with(table);
    set_at(child, rest, value, above)
}

/// The list at `tree`, made from what is there: a list stays, an empty table or a scalar
/// becomes an empty list, a table a list of one.
fn as_list(tree: &mut Value) -> &mut Vec<Value> {
    let was = std::mem::replace(tree, Value::from(Vec::<Value>::new()));
    *tree = match was {
        Value::Array(..) => was,
        Value::Dict(_, ref d) if !d.is_empty() => Value::from(vec![was]),
        _ => Value::from(Vec::<Value>::new()),
    };
    let Value::Array(_, items) = tree else {
        unreachable!("made a list just above");
    };
    items
}

/// Removes the key or list entry at `path`; whether there was one.
pub fn remove(tree: &mut Value, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut node = tree;
    for key in parents {
        node = match child(node, key) {
            Some(c) => c,
            None => return false,
        };
    }
    match node {
        Value::Dict(_, d) => d.remove(last).is_some(),
        Value::Array(_, items) => match last.parse::<usize>() {
            Ok(i) if i < items.len() => {
                items.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

fn child<'a>(node: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    match node {
        Value::Dict(_, d) => d.get_mut(key),
        Value::Array(_, items) => items.get_mut(key.parse::<usize>().ok()?),
        _ => None,
    }
}

/// The value at `path`, if any; a number steps into a list.
pub fn get<'a>(tree: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(tree, |node, key| match node {
        Value::Dict(_, d) => d.get(key),
        Value::Array(_, items) => items.get(key.parse::<usize>().ok()?),
        _ => None,
    })
}

/// Whether any value sits at `key` (a dotted path without list indices), in any entry of the
/// lists on the way.
pub fn has_key(tree: &Value, key: &[&str]) -> bool {
    let Some((first, rest)) = key.split_first() else {
        return true;
    };
    match tree {
        Value::Dict(_, d) => d.get(*first).is_some_and(|v| has_key(v, rest)),
        Value::Array(_, items) => items.iter().any(|v| has_key(v, key)),
        _ => false,
    }
}

/// Path order with list indices compared as numbers, so `upstream.2` comes before
/// `upstream.10` and an entry is added before the next one is.
pub fn path_order(a: &[String], b: &[String]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let o = match (x.parse::<usize>(), y.parse::<usize>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => x.cmp(y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

/// `path` without its list indices: `upstream.0.pool_address` is the key `upstream.pool_address`.
pub fn key_of(path: &[String]) -> Vec<&str> {
    path.iter()
        .map(String::as_str)
        .filter(|s| s.parse::<usize>().is_err())
        .collect()
}
