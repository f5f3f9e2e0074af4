//! The block journal: every found block appended and fsynced before it goes anywhere, and
//! every node's verdict on it after. At start the journal is read back and the blocks some
//! node has not judged yet are submitted again.
//!
//! One JSON object per line, so a torn last line (a crash mid-write) costs only itself. The
//! file is opened at start and held, and a ballast file of zeros holds disk space for it: when
//! the disk fills up, the ballast is given up and the write tried again.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use bitcoin::BlockHash;
use serde::{Deserialize, Serialize};
use tracing::{error, warn};

/// The journal's file name in the blocks directory.
pub const JOURNAL_FILE: &str = "journal.jsonl";
/// The ballast's file name.
pub const BALLAST_FILE: &str = "journal.ballast";

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    /// A block, before anything else happens to it.
    Found {
        /// Its hash.
        hash: BlockHash,
        /// Its height.
        height: u32,
        /// Who found it (a worker, a TDP client).
        found_by: String,
        /// Unix seconds.
        at: u64,
        /// The whole block, hex, as `submitblock` takes it.
        block: String,
    },
    /// What became of it at one node.
    Fate {
        /// The block.
        hash: BlockHash,
        /// The node, as configured.
        node: String,
        /// `accepted`, `duplicate`, `inconclusive`, `rejected: <reason>`, or `abandoned: ...`.
        fate: String,
        /// Unix seconds.
        at: u64,
    },
}

/// A block read back from the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its hash.
    pub hash: BlockHash,
    /// Its height.
    pub height: u32,
    /// Who found it.
    pub found_by: String,
    /// The block, hex.
    pub block: String,
    /// Each node's fate for it so far.
    pub fates: HashMap<String, String>,
}

/// The journal file, open.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
    ballast: PathBuf,
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Journal {
    /// Opens (or creates) the journal in `dir`, lays a ballast of `ballast_bytes` beside it,
    /// and reads back every block it holds, oldest first.
    ///
    /// # Errors
    /// The directory or the journal cannot be created or read.
    pub fn open(dir: &Path, ballast_bytes: u64) -> std::io::Result<(Journal, Vec<Entry>)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(JOURNAL_FILE);
        let entries = read(&path)?;
        let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
        if !ends_with_newline(&path)? {
            // A torn last line: what is appended next must not join it.
            file.write_all(b"\n")?;
        }
        let ballast = dir.join(BALLAST_FILE);
        if let Err(e) = lay_ballast(&ballast, ballast_bytes) {
            warn!(path = %ballast.display(), error = %e, "cannot lay the journal's disk ballast; a full disk may stop the journal");
        }
        Ok((
            Journal {
                file,
                path,
                ballast,
            },
            entries,
        ))
    }

    /// The journal's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `record` and waits until it is on disk. A full disk gives up the ballast and
    /// tries once more.
    ///
    /// # Errors
    /// The write or the sync failed (twice, for a full disk).
    pub fn append(&mut self, record: &Record) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        match self.write_synced(&line) {
            Err(e) if is_disk_full(&e) && self.ballast.exists() => {
                error!(path = %self.ballast.display(), "disk full: giving up the journal's ballast to write a block");
                std::fs::remove_file(&self.ballast)?;
                self.write_synced(&line)
            }
            other => other,
        }
    }

    fn write_synced(&mut self, line: &[u8]) -> std::io::Result<()> {
        self.file.write_all(line)?;
        self.file.sync_data()
    }
}

fn ends_with_newline(path: &Path) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path)?;
    if f.metadata()?.len() == 0 {
        return Ok(true);
    }
    f.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    f.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

fn is_disk_full(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::StorageFull || e.raw_os_error() == Some(28)
}

/// Writes `bytes` of zeros to `path` unless a file of that size is there already.
fn lay_ballast(path: &Path, bytes: u64) -> std::io::Result<()> {
    if bytes == 0 || std::fs::metadata(path).is_ok_and(|m| m.len() >= bytes) {
        return Ok(());
    }
    let mut f = File::create(path)?;
    let chunk = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
        f.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    f.sync_all()
}

/// Every block in the journal kept in `dir`, oldest first, without opening it for writing:
/// for operators' tools and tests.
///
/// # Errors
/// The journal exists but cannot be read.
pub fn read_dir(dir: &Path) -> std::io::Result<Vec<Entry>> {
    read(&dir.join(JOURNAL_FILE))
}

/// Every block in the journal at `path`, with the fates recorded for it.
fn read(path: &Path) -> std::io::Result<Vec<Entry>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut entries: Vec<Entry> = Vec::new();
    let mut index: HashMap<BlockHash, usize> = HashMap::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(&line) {
            Ok(Record::Found {
                hash,
                height,
                found_by,
                block,
                ..
            }) => {
                index.entry(hash).or_insert_with(|| {
                    entries.push(Entry {
                        hash,
                        height,
                        found_by,
                        block,
                        fates: HashMap::new(),
                    });
                    entries.len() - 1
                });
            }
            Ok(Record::Fate {
                hash, node, fate, ..
            }) => {
                if let Some(&i) = index.get(&hash) {
                    entries[i].fates.insert(node, fate);
                }
            }
            // A crash mid-write leaves a torn last line: only that line is lost.
            Err(e) => {
                warn!(path = %path.display(), line = n + 1, error = %e, "unreadable journal line skipped");
            }
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use bitcoin::hashes::Hash;

    use super::*;

    fn found(n: u8) -> Record {
        Record::Found {
            hash: BlockHash::from_byte_array([n; 32]),
            height: 100 + u32::from(n),
            found_by: "w".into(),
            at: 1,
            block: "00".repeat(81),
        }
    }

    fn fate(n: u8, node: &str, fate: &str) -> Record {
        Record::Fate {
            hash: BlockHash::from_byte_array([n; 32]),
            node: node.into(),
            fate: fate.into(),
            at: 2,
        }
    }

    #[test]
    fn blocks_and_their_fates_are_read_back_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, entries) = Journal::open(dir.path(), 4096).unwrap();
        assert!(entries.is_empty());
        assert_eq!(
            std::fs::metadata(dir.path().join(BALLAST_FILE))
                .unwrap()
                .len(),
            4096
        );
        j.append(&found(1)).unwrap();
        j.append(&found(2)).unwrap();
        j.append(&fate(1, "main", "accepted")).unwrap();
        drop(j);
        let (_, entries) = Journal::open(dir.path(), 4096).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].height, 101);
        assert_eq!(
            entries[0].fates.get("main").map(String::as_str),
            Some("accepted")
        );
        assert!(entries[1].fates.is_empty(), "block 2 is unresolved");
    }

    #[test]
    fn a_torn_last_line_loses_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path(), 0).unwrap();
        j.append(&found(1)).unwrap();
        drop(j);
        let path = dir.path().join(JOURNAL_FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"found":{"hash":"0303"#).unwrap();
        drop(f);
        let (mut j, entries) = Journal::open(dir.path(), 0).unwrap();
        assert_eq!(entries.len(), 1);
        // Appending after a torn line starts a new line: nothing written later is lost.
        j.append(&found(4)).unwrap();
        drop(j);
        let (_, entries) = Journal::open(dir.path(), 0).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].height, 104);
    }
}
