//! Reloading the config on SIGHUP: read the file and the environment again, validate, and
//! tell what changed in the sections a daemon applies while it runs (the farm's policy, the
//! vardiff settings) from what only a restart applies. A config with a bad key is refused
//! whole and the one in force stays.

use figment::value::Value;
use tracing::{error, info, warn};

use crate::layers::diff::{changes, Change};
use crate::layers::{overlay, KeyErrors, Layers};

/// Reads the config afresh: the file and the environment as at start, with the same flags.
pub type Load<C> = Box<dyn FnMut() -> Result<(C, Layers), KeyErrors> + Send>;

/// What a reload found.
#[derive(Debug)]
pub enum Outcome<C> {
    /// A bad key: nothing changes.
    Refused(KeyErrors),
    /// The config reads as the one in force.
    Unchanged,
    /// Something changed.
    Changed {
        /// The new config, valid; apply its live sections.
        config: Box<C>,
        /// Changed keys in the sections applied while running.
        live: Vec<Change>,
        /// Changed keys only a restart applies.
        at_restart: Vec<Change>,
    },
}

/// Reads the config again on request, and remembers what is in force.
pub struct Reloader<C> {
    load: Load<C>,
    /// The tree in force: the start's, with the live keys of each reload since.
    in_force: Value,
    /// The keys (or whole sections) applied while running.
    live: &'static [&'static str],
}

impl<C> std::fmt::Debug for Reloader<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("live", &self.live)
            .finish_non_exhaustive()
    }
}

impl<C> Reloader<C> {
    /// `load` reads the config; `at_start` is what the daemon started with; `live` names the
    /// keys or whole sections (`vardiff`, `policy.min_feerate`) it applies while running.
    pub fn new(load: Load<C>, at_start: &Layers, live: &'static [&'static str]) -> Self {
        Reloader {
            load,
            in_force: at_start.tree().clone(),
            live,
        }
    }

    /// Reads and validates the config, and compares it with the one in force. The live
    /// sections of a valid config are taken as in force: the caller applies them.
    pub fn reload(&mut self) -> Outcome<C> {
        let (config, layers) = match (self.load)() {
            Ok(loaded) => loaded,
            Err(e) => return Outcome::Refused(e),
        };
        let all = changes(&self.in_force, layers.tree());
        if all.is_empty() {
            return Outcome::Unchanged;
        }
        let (live, at_restart): (Vec<Change>, Vec<Change>) = all
            .into_iter()
            .partition(|c| self.live.iter().any(|s| c.in_section(s)));
        for key in self.live {
            let path: Vec<String> = key.split('.').map(str::to_owned).collect();
            match overlay::get(layers.tree(), &path) {
                Some(v) => {
                    let _ = overlay::set(&mut self.in_force, &path, v.clone());
                }
                None => {
                    overlay::remove(&mut self.in_force, &path);
                }
            }
        }
        Outcome::Changed {
            config: Box::new(config),
            live,
            at_restart,
        }
    }
}

/// Logs a reload's outcome (the applied keys are the caller's to log, once applied); returns
/// the new config when there is one to apply.
pub fn log_outcome<C>(outcome: Outcome<C>) -> Option<(Box<C>, Vec<Change>)> {
    match outcome {
        Outcome::Refused(errors) => {
            for e in &errors.0 {
                error!("reload refused: {e}");
            }
            error!(
                bad_keys = errors.0.len(),
                "config reload refused: the config in force is kept"
            );
            None
        }
        Outcome::Unchanged => {
            info!("config reloaded: nothing changed");
            None
        }
        Outcome::Changed {
            config,
            live,
            at_restart,
        } => {
            for c in &at_restart {
                warn!(change = %c, "config changed where only a restart applies it");
            }
            Some((config, live))
        }
    }
}

/// The keys of `changes`, comma-separated: what an event says changed.
pub fn keys(changes: &[Change]) -> String {
    let keys: Vec<&str> = changes.iter().map(|c| c.key.as_str()).collect();
    keys.join(", ")
}

/// Resolves at each SIGHUP; never on systems without it.
#[derive(Debug)]
pub struct Hangups(#[cfg(unix)] Option<tokio::signal::unix::Signal>);

impl Hangups {
    /// Starts listening for SIGHUP (it no longer ends the process).
    pub fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::hangup()) {
                Ok(s) => Hangups(Some(s)),
                Err(e) => {
                    warn!(error = %e, "cannot listen for SIGHUP: no config reload");
                    Hangups(None)
                }
            }
        }
        #[cfg(not(unix))]
        Hangups()
    }

    /// The next SIGHUP.
    pub async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(s) = &mut self.0 {
            if s.recv().await.is_some() {
                return;
            }
        }
        std::future::pending::<()>().await;
    }
}

impl Default for Hangups {
    fn default() -> Self {
        Hangups::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::KeyError;
    use std::sync::{Arc, Mutex};

    /// A reloader over a file whose text the test changes.
    fn reloader(text: &Arc<Mutex<String>>) -> Reloader<String> {
        let file = text.clone();
        let load: Load<String> = Box::new(move || {
            let t = file.lock().unwrap().clone();
            if t.contains("broken") {
                return Err(KeyError {
                    key: "vardiff.min_difficulty".into(),
                    origin: None,
                    problem: "broken".into(),
                }
                .into());
            }
            Ok((t.clone(), Layers::from_toml(&t, "f")?))
        });
        let first = Layers::from_toml(&text.lock().unwrap(), "f").unwrap();
        Reloader::new(load, &first, &["policy", "vardiff"])
    }

    #[test]
    fn live_sections_apply_and_the_rest_waits_for_a_restart() {
        let text = Arc::new(Mutex::new(
            "[vardiff]\nmin_difficulty = 1.0\n[stratum]\nlisten = \"a\"\n".to_owned(),
        ));
        let mut r = reloader(&text);
        assert!(matches!(r.reload(), Outcome::Unchanged));
        *text.lock().unwrap() =
            "[vardiff]\nmin_difficulty = 2.0\n[stratum]\nlisten = \"b\"\n[policy]\nmin_feerate = 1.5\n"
                .into();
        let Outcome::Changed {
            live, at_restart, ..
        } = r.reload()
        else {
            panic!("changed");
        };
        assert_eq!(keys(&live), "policy.min_feerate, vardiff.min_difficulty");
        assert_eq!(keys(&at_restart), "stratum.listen");
        // Read again: the live sections are in force, the listen address still is not.
        let Outcome::Changed {
            live, at_restart, ..
        } = r.reload()
        else {
            panic!("the restart-only change stays pending");
        };
        assert!(live.is_empty());
        assert_eq!(keys(&at_restart), "stratum.listen");

        *text.lock().unwrap() = "broken".into();
        assert!(matches!(r.reload(), Outcome::Refused(e) if e.0.len() == 1));
    }
}
