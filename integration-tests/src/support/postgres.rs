//! A real PostgreSQL (the Debian package `postgresql`, installed by `scripts/setup.sh`), started
//! by a test in a temp dir on a free loopback port, never the system service. PostgreSQL
//! refuses to run as root, so as root (CI) every command runs as the package's `postgres` user
//! (`runuser`); the temp dir is handed to that user.
//!
//! [`Postgres::stop`] and [`Postgres::start_again`] take the server down and bring it back on
//! the same port and data directory, as an outage does.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context;

use super::process::tail_file;

/// Names the directory of `initdb` and `pg_ctl` instead of the newest
/// `/usr/lib/postgresql/<version>/bin`.
pub const PG_BIN_ENV: &str = "JD_PG_BIN_DIR";

/// A running PostgreSQL, stopped and removed on drop.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// Run as this user (`runuser -u`), when the test runs as root.
    user: Option<String>,
    running: bool,
}

/// The newest installed server's binaries.
fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(PG_BIN_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b).with_context(|| {
        format!("no PostgreSQL server in /usr/lib/postgresql (install it: scripts/setup.sh, or set {PG_BIN_ENV})")
    })
}

/// `(uid, gid)` of `user`, from /etc/passwd.
fn ids_of(user: &str) -> anyhow::Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&user))
        .and_then(|f| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))
        .with_context(|| format!("no user {user:?} to run PostgreSQL as (scripts/setup.sh installs the package, which creates it)"))
}

/// A loopback port outside the ephemeral range, so a restart finds it free again.
fn fixed_port() -> anyhow::Result<u16> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .subsec_nanos();
    let mut x = (u64::from(std::process::id()) << 32) | u64::from(nanos);
    for _ in 0..200 {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let port = 20_000 + ((x >> 33) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no free port in 20000..32000")
}

impl Postgres {
    /// Creates a cluster in a temp dir and starts it; the `postgres` database is trusted
    /// from loopback without a password.
    ///
    /// # Errors
    /// No server installed, or it did not start within 30 s.
    pub fn start() -> anyhow::Result<Postgres> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new().prefix("postgres-").tempdir()?;
        let root = std::fs::metadata("/proc/self")?.uid() == 0;
        let user = root.then(|| "postgres".to_owned());
        if let Some(u) = &user {
            let (uid, gid) = ids_of(u)?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
        }
        let mut pg = Postgres {
            dir,
            bin,
            port: fixed_port()?,
            user,
            running: false,
        };
        let data = pg.data();
        pg.run(
            "initdb",
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )?;
        pg.start_again()?;
        Ok(pg)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// Runs one of the server's programs (as the server's user), waiting for it.
    fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let exe = self.bin.join(program);
        let mut cmd = match &self.user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let out = cmd
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", exe.display()))?;
        anyhow::ensure!(
            out.status.success(),
            "{program} {args:?} failed ({}):\n{}{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail_file(&self.log(), 4_000)
        );
        Ok(())
    }

    /// Starts the server on its port and data directory (again, after [`Postgres::stop`]),
    /// and waits until it accepts connections.
    ///
    /// # Errors
    /// It did not start within 30 s.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let (data, log) = (self.data(), self.log().display().to_string());
        self.run(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-o", &options, "-w", "-t", "30", "start",
            ],
        )?;
        self.running = true;
        Ok(())
    }

    /// Stops the server (fast shutdown: connections are cut).
    ///
    /// # Errors
    /// It did not stop within 30 s.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let data = self.data();
        self.run(
            "pg_ctl",
            &["-D", &data, "-m", "fast", "-w", "-t", "30", "stop"],
        )?;
        self.running = false;
        Ok(())
    }

    /// `postgres://...` for the server's `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Its directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The server log's last lines.
    pub fn log_tail(&self) -> String {
        tail_file(&self.log(), 4_000)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            let data = self.data();
            let _ = self.run(
                "pg_ctl",
                &["-D", &data, "-m", "immediate", "-w", "-t", "10", "stop"],
            );
        }
    }
}
