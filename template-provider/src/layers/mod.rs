//! The config file with environment overrides on top, read into a daemon's raw config type.
//!
//! Every key of the TOML file can also be set by an environment variable: the daemon's prefix,
//! then the key's path in capitals with `__` between the parts
//! (`JD_PROXY__STRATUM__LISTEN=0.0.0.0:3333`, `TEMPLATE_PROVIDER__SERVER__LISTEN=...`). A
//! variable wins over the file, a command-line flag over both.
//!
//! Lists of tables (`[[node]]`, `[[upstream]]`) take the entry's index, from 0:
//! `JD_PROXY__UPSTREAM__0__POOL_ADDRESS` changes the first entry of the file's list, and the
//! index just past its end adds an entry. A whole list also fits in one variable as an inline
//! TOML array: `JD_PROXY__UPSTREAM='[{pool_address = "pool:34254", ...}]'`.
//!
//! figment reads the file and the variables and parses each value (`12` is a number, `true` a
//! boolean, `[a, b]` a list); a value from a variable is then taken as its key needs it, so
//! `JD_PROXY__COINBASE__TAG=2024` stays text and `..._MIN_DIFFICULTY=1e-6` is a number.
//!
//! Every bad key is reported at once. serde stops at the first error, so extraction is
//! retried with each offending key set aside until the rest reads; the typed validation then
//! reports all of its own, and each error names the variable or flag its value came from.

pub mod diff;
pub mod overlay;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::Path;

use figment::error::Kind;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::Value;
use figment::Figment;
use serde::de::DeserializeOwned;

use self::overlay::{has_key, key_of, path_order, OverlayError};
use crate::config::ConfigErrors;

/// The most keys set aside while reading: far above any real file's mistakes, and a bound on
/// the retries.
const MAX_BAD_KEYS: usize = 256;

/// One value set over the file: by an environment variable or a command-line flag.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// The key's path, list indices included (`upstream`, `0`, `pool_address`).
    pub path: Vec<String>,
    /// The value as written.
    pub raw: String,
    /// Where it came from: the variable's name, or the flag.
    pub origin: String,
}

/// A bad key, with where its value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    /// The dotted key (`stratum.listen`, `upstream.1.pool_address`); empty for a whole-file
    /// problem.
    pub key: String,
    /// `JD_PROXY__STRATUM__LISTEN`, `--listen` or the file; `None` for a key set nowhere.
    pub origin: Option<String>,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.key.is_empty(), &self.origin) {
            (true, Some(o)) => write!(f, "{o}: {}", self.problem),
            (true, None) => f.write_str(&self.problem),
            (false, Some(o)) => write!(f, "config key `{}` (from {o}): {}", self.key, self.problem),
            (false, None) => write!(f, "config key `{}`: {}", self.key, self.problem),
        }
    }
}

/// Every bad key, one per line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyErrors(pub Vec<KeyError>);

impl fmt::Display for KeyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            e.fmt(f)?;
        }
        Ok(())
    }
}

impl std::error::Error for KeyErrors {}

impl From<KeyError> for KeyErrors {
    fn from(e: KeyError) -> Self {
        KeyErrors(vec![e])
    }
}

/// The file and its overrides, merged into one value tree.
#[derive(Debug, Clone)]
pub struct Layers {
    /// The file's name for messages; `None` without a file.
    file: Option<String>,
    /// The file's keys alone: which keys it sets.
    file_tree: Value,
    /// The file with every override applied.
    tree: Value,
    overrides: Vec<Override>,
}

impl Default for Layers {
    fn default() -> Self {
        Layers {
            file: None,
            file_tree: overlay::table(),
            tree: overlay::table(),
            overrides: Vec::new(),
        }
    }
}

impl Layers {
    /// Reads `file` (none: every key at its default) and every variable starting with
    /// `env_prefix` (`JD_PROXY__`).
    ///
    /// # Errors
    /// A file that cannot be read or is not TOML, or a variable that does not fit the file's
    /// shape.
    pub fn read(file: Option<&Path>, env_prefix: &str) -> Result<Layers, KeyErrors> {
        let layers = match file {
            None => Layers::default(),
            Some(path) => {
                let label = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|e| KeyError {
                    key: String::new(),
                    origin: Some(label.clone()),
                    problem: format!("cannot read: {e}"),
                })?;
                Layers::from_toml(&text, &label)?
            }
        };
        layers.with_env(env_prefix)
    }

    /// The TOML `text`, called `label` in messages.
    ///
    /// # Errors
    /// Not TOML.
    pub fn from_toml(text: &str, label: &str) -> Result<Layers, KeyErrors> {
        let tree: Value = Figment::from(Toml::string(text))
            .extract()
            .map_err(|e| KeyError {
                key: String::new(),
                origin: Some(label.to_owned()),
                // figment adds "in TOML source string", which says nothing to an operator.
                problem: e.to_string().replace(" in TOML source string", ""),
            })?;
        Ok(Layers {
            file: Some(label.to_owned()),
            file_tree: tree.clone(),
            tree,
            overrides: Vec::new(),
        })
    }

    /// Adds every environment variable starting with `prefix` (`JD_PROXY__`), in key order.
    ///
    /// # Errors
    /// Every variable that does not fit the file's shape (a key inside a list without an
    /// index, an index that leaves a gap).
    pub fn with_env(mut self, prefix: &str) -> Result<Layers, KeyErrors> {
        let mut vars: Vec<Override> = Env::prefixed(prefix)
            .split("__")
            .iter()
            .map(|(key, raw)| {
                let path: Vec<String> = key.as_str().split('.').map(str::to_owned).collect();
                let origin = format!("{prefix}{}", path.join("__").to_ascii_uppercase());
                Override { path, raw, origin }
            })
            .collect();
        vars.sort_by(|a, b| path_order(&a.path, &b.path));
        let mut errors = KeyErrors::default();
        for v in vars {
            if let Err(e) = self.push(v.clone()) {
                errors.0.push(KeyError {
                    key: v.path.join("."),
                    origin: Some(v.origin),
                    problem: e.to_string(),
                });
            }
        }
        if errors.0.is_empty() {
            Ok(self)
        } else {
            Err(errors)
        }
    }

    /// Sets the dotted `key` to `raw` (parsed as an environment value is), coming from
    /// `origin`: how command-line flags go over the file and the environment.
    ///
    /// # Errors
    /// A key that does not fit the file's shape.
    pub fn set(mut self, key: &str, raw: &str, origin: &str) -> Result<Layers, KeyErrors> {
        let o = Override {
            path: key.split('.').map(str::to_owned).collect(),
            raw: raw.to_owned(),
            origin: origin.to_owned(),
        };
        self.push(o.clone()).map_err(|e| KeyError {
            key: key.to_owned(),
            origin: Some(o.origin),
            problem: e.to_string(),
        })?;
        Ok(self)
    }

    fn push(&mut self, o: Override) -> Result<(), OverlayError> {
        let value: Value = o.raw.parse().unwrap_or_else(|e| match e {});
        overlay::set(&mut self.tree, &o.path, value)?;
        self.overrides.push(o);
        Ok(())
    }

    /// The merged tree: what is compared between readings.
    pub fn tree(&self) -> &Value {
        &self.tree
    }

    /// The overrides applied, in order.
    pub fn overrides(&self) -> &[Override] {
        &self.overrides
    }

    /// Reads the tree into `T`. Keys that do not read (unknown, or of the wrong type) are
    /// reported and set aside, so the rest still reads and can be validated.
    pub fn extract<T: DeserializeOwned>(&self) -> (Option<T>, KeyErrors) {
        let mut tree = self.tree.clone();
        let mut errors = KeyErrors::default();
        let mut retyped: Vec<Vec<String>> = Vec::new();
        // Each round sets one key aside or retypes one override, each at most once.
        for _ in 0..=MAX_BAD_KEYS + self.overrides.len() {
            let e = match Figment::from(Serialized::defaults(&tree)).extract::<T>() {
                Ok(t) => return (Some(t), errors),
                Err(e) => e,
            };
            let mut progress = false;
            for e in e {
                if !retyped.contains(&e.path) {
                    if let Some(v) = self.as_needed(&e.path, &e.kind) {
                        progress |= overlay::set(&mut tree, &e.path, v).is_ok();
                        retyped.push(e.path);
                        continue;
                    }
                }
                errors.0.push(KeyError {
                    key: e.path.join("."),
                    origin: self.origin(&key_of(&e.path)),
                    problem: describe(&e.kind),
                });
                progress |= overlay::remove(&mut tree, &e.path);
            }
            if !progress || errors.0.len() >= MAX_BAD_KEYS {
                break;
            }
        }
        (None, errors)
    }

    /// An overridden value read again as the key needs it: text for a string key, a number
    /// for a number key. figment guesses a type from the text alone.
    fn as_needed(&self, path: &[String], kind: &Kind) -> Option<Value> {
        let Kind::InvalidType(_, expected) = kind else {
            return None;
        };
        let raw = &self.overrides.iter().rev().find(|o| o.path == path)?.raw;
        if expected.contains("string") {
            return Some(Value::from(raw.clone()));
        }
        if *expected == "f64" || *expected == "f32" {
            return raw.trim().parse::<f64>().ok().map(Value::from);
        }
        None
    }

    /// Where the value of `key` (without list indices) came from: the overrides that set it,
    /// a whole section or list holding it, or a key inside it; else the file, if it has it.
    pub fn origin(&self, key: &[&str]) -> Option<String> {
        let matching: Vec<(bool, &str)> = self
            .overrides
            .iter()
            .filter_map(|o| {
                let k = key_of(&o.path);
                let exact = k == key;
                (exact || k.starts_with(key) || key.starts_with(&k))
                    .then_some((exact, o.origin.as_str()))
            })
            .collect();
        // A value set twice came from the later setting (a flag over a variable).
        let last_exact = matching.iter().rposition(|(exact, _)| *exact).unwrap_or(0);
        let mut from: Vec<&str> = matching[last_exact..].iter().map(|(_, o)| *o).collect();
        if !from.is_empty() {
            from.dedup();
            return Some(from.join(", "));
        }
        let file = self.file.as_ref()?;
        has_key(&self.file_tree, key).then(|| file.clone())
    }

    /// The typed validation's errors, each with where its value came from; those of keys
    /// already reported as unreadable are left out (they read as unset once set aside).
    pub fn attribute(&self, errors: ConfigErrors, reported: &KeyErrors) -> KeyErrors {
        let seen: Vec<String> = reported
            .0
            .iter()
            .map(|e| {
                let path: Vec<String> = e.key.split('.').map(str::to_owned).collect();
                key_of(&path).join(".")
            })
            .collect();
        KeyErrors(
            errors
                .0
                .into_iter()
                .filter(|e| !seen.iter().any(|s| s == e.key))
                .map(|e| KeyError {
                    key: e.key.to_owned(),
                    origin: self.origin(&e.key.split('.').collect::<Vec<_>>()),
                    problem: e.problem,
                })
                .collect(),
        )
    }

    /// Reads the tree into `R`, validates it into `C`, and reports every bad key of both steps.
    ///
    /// # Errors
    /// Every key that does not read or does not validate.
    pub fn load<R: DeserializeOwned, C>(
        &self,
        validate: impl FnOnce(R) -> Result<C, ConfigErrors>,
    ) -> Result<C, KeyErrors> {
        let (raw, mut errors) = self.extract::<R>();
        let Some(raw) = raw else {
            return Err(errors);
        };
        match validate(raw) {
            Ok(c) if errors.0.is_empty() => Ok(c),
            Ok(_) => Err(errors),
            Err(bad) => {
                let more = self.attribute(bad, &errors);
                errors.0.extend(more.0);
                Err(errors)
            }
        }
    }
}

/// figment's words for a value that does not read, as an operator wants them.
fn describe(kind: &Kind) -> String {
    match kind {
        Kind::UnknownField(_, expected) => {
            format!("unknown key; expected one of {}", expected.join(", "))
        }
        other => other.to_string(),
    }
}
