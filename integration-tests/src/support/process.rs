//! What the node and the reference peers share as child processes: where their binaries are,
//! a process that dies with its handle, its temporary directory, and its log.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::{Mutex, PoisonError};

use anyhow::{bail, Context};

/// Cache root used by the build scripts (default `~/.cache/jd-proxy`).
pub const CACHE_DIR_ENV: &str = "JD_CACHE_DIR";
/// When set to `1`, the directories of nodes and peers are kept after they are dropped.
pub const KEEP_DIRS_ENV: &str = "JD_KEEP_TEST_DIRS";

/// `$JD_CACHE_DIR`, else `~/.cache/jd-proxy`; `None` without either.
pub fn cache_root() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(CACHE_DIR_ENV).filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(PathBuf::from(home).join(".cache/jd-proxy"))
}

/// The directory the variable `env` names, when it is set and not empty.
///
/// # Errors
/// The variable names something that is not a directory.
pub fn dir_from_env(env: &str, script: &str) -> anyhow::Result<Option<PathBuf>> {
    let Some(dir) = std::env::var_os(env).filter(|d| !d.is_empty()) else {
        return Ok(None);
    };
    let dir = PathBuf::from(dir);
    if !dir.is_dir() {
        bail!(
            "{env}={} is not a directory; unset it to use the binaries built by `{script}`",
            dir.display()
        );
    }
    Ok(Some(dir))
}

/// `dir/name`, checked to exist; `env` is the variable that may have chosen `dir`, `script`
/// the one that builds the binary.
///
/// # Errors
/// No such file, with the script to run.
pub fn binary_in(dir: &Path, name: &str, env: &str, script: &str) -> anyhow::Result<PathBuf> {
    let bin = dir.join(name);
    if !bin.is_file() {
        bail!(
            "{name} not found in {} (from {}). Run `{script}` to build it.",
            dir.display(),
            if std::env::var_os(env).is_some_and(|d| !d.is_empty()) {
                env
            } else {
                "the cache"
            },
        );
    }
    Ok(bin)
}

/// A port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
///
/// # Errors
/// No port could be bound.
pub fn free_local_port() -> anyhow::Result<u16> {
    let listener =
        TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0 to find a free port")?;
    Ok(listener.local_addr()?.port())
}

/// The last `max_bytes` of a file, from the first whole line; empty when it cannot be read.
pub fn tail_file(path: &Path, max_bytes: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max_bytes);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    if start > 0 {
        // Drop the partial first line.
        match text.split_once('\n') {
            Some((_, rest)) => rest.to_string(),
            None => text,
        }
    } else {
        text
    }
}

/// A child process and the temporary directory it works in.
///
/// Dropping it kills the process and waits for it before the directory goes, so a failing test
/// leaks neither. With `JD_KEEP_TEST_DIRS=1` the directory stays and its path is printed.
pub struct ChildInDir {
    /// What the directory is, for the message when it is kept.
    what: String,
    /// Behind a mutex so liveness can be polled through `&self` (nodes are often shared via `Arc`).
    child: Mutex<Option<Child>>,
    /// `None` only during drop.
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl ChildInDir {
    /// Takes ownership of `child`, running in `dir`; `what` names the directory.
    pub fn new(what: impl Into<String>, child: Child, dir: tempfile::TempDir) -> Self {
        ChildInDir {
            what: what.into(),
            child: Mutex::new(Some(child)),
            path: dir.path().to_path_buf(),
            dir: Some(dir),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// OS process id, while the process is owned by this handle.
    pub fn pid(&self) -> Option<u32> {
        self.child
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(Child::id)
    }

    /// The exit status if the process has exited (without blocking).
    pub fn exit_status(&self) -> Option<ExitStatus> {
        let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        child.as_mut()?.try_wait().ok().flatten()
    }

    /// Whether the process is still running.
    pub fn is_running(&self) -> bool {
        let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Puts a (new) process in the same directory, killed on drop like the first.
    pub fn replace_child(&mut self, child: Child) {
        *self.child.get_mut().unwrap_or_else(PoisonError::into_inner) = Some(child);
    }

    /// The process, no longer killed on drop (the directory still goes).
    pub fn take_child(&mut self) -> Option<Child> {
        self.child
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl Drop for ChildInDir {
    fn drop(&mut self) {
        if let Some(mut child) = self.take_child() {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        if let Some(dir) = self.dir.take() {
            if std::env::var(KEEP_DIRS_ENV).is_ok_and(|v| v == "1") {
                let path = dir.keep();
                eprintln!("{KEEP_DIRS_ENV}=1: kept {} {}", self.what, path.display());
            }
        }
    }
}
