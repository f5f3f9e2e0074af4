//! The spool: batches the database could not take, one JSON line each, synced to disk before
//! they are counted as kept, and replayed in order once the database is back.
//!
//! A crash mid-append leaves a torn last line; it is cut off when the spool is opened (that
//! batch goes with the process, like the counters it came from). A line that does not parse
//! in the middle of the file (a damaged disk) is skipped and counted, never fatal.
//! Replaying writes every batch again, the first ones perhaps already written: the ledger's
//! keys make that harmless, so the spool is emptied only after the whole replay succeeded.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ledger::Batch;

/// The spool file, owned by the ledger's writer task alone.
#[derive(Debug)]
pub struct Spool {
    path: PathBuf,
    file: File,
    /// Batches in the file now.
    len: u64,
}

/// What reading the spool found.
#[derive(Debug, Default)]
pub struct Replay {
    /// The batches, oldest first.
    pub batches: Vec<Batch>,
    /// Lines that did not parse, skipped.
    pub damaged: u64,
}

impl Spool {
    /// Opens (or creates) the spool at `path`, cutting off a torn last line.
    ///
    /// # Errors
    /// The file cannot be created, read or repaired.
    pub fn open(path: &Path) -> std::io::Result<Spool> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if whole < bytes.len() {
            tracing::warn!(path = %path.display(), bytes = bytes.len() - whole, "ledger spool ends in a torn line (a crash mid-write); cut off");
            file.set_len(whole as u64)?;
            file.sync_all()?;
        }
        let len = bytes[..whole].iter().filter(|b| **b == b'\n').count() as u64;
        Ok(Spool {
            path: path.to_path_buf(),
            file,
            len,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Batches waiting.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `batch` and waits until it is on disk.
    ///
    /// # Errors
    /// The write or the sync failed; the batch is not kept.
    pub fn append(&mut self, batch: &Batch) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(batch).map_err(std::io::Error::other)?;
        line.push(b'\n');
        // One write of the whole line: a crash leaves at most a torn last line.
        self.file.write_all(&line)?;
        self.file.sync_data()?;
        self.len += 1;
        Ok(())
    }

    /// Every batch waiting, oldest first.
    ///
    /// # Errors
    /// The file cannot be read.
    pub fn read(&mut self) -> std::io::Result<Replay> {
        self.file.seek(SeekFrom::Start(0))?;
        let mut replay = Replay::default();
        for line in BufReader::new(&self.file).lines() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Batch>(&line) {
                Ok(b) => replay.batches.push(b),
                Err(e) => {
                    tracing::error!(path = %self.path.display(), error = %e, "ledger spool line does not parse; skipped");
                    replay.damaged += 1;
                }
            }
        }
        Ok(replay)
    }

    /// Empties the spool once everything in it was written.
    ///
    /// # Errors
    /// The file cannot be truncated.
    pub fn clear(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.sync_all()?;
        self.len = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use ledger::{BatchKey, WorkRow};

    use super::*;

    fn batch(seq: i64) -> Batch {
        let key = BatchKey {
            gateway: "g".into(),
            run: 1,
            seq,
        };
        let mut b = Batch::new(key, 60 * seq, 60);
        b.work.push(WorkRow {
            worker: "w".into(),
            customer: None,
            shares: seq,
            work: 0.25,
            rejects: 0,
        });
        b
    }

    #[test]
    fn batches_come_back_in_order_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool/ledger.jsonl");
        let mut s = Spool::open(&path).unwrap();
        assert!(s.is_empty());
        for seq in 1..=3 {
            s.append(&batch(seq)).unwrap();
        }
        drop(s);
        let mut s = Spool::open(&path).unwrap();
        assert_eq!(s.len(), 3);
        let r = s.read().unwrap();
        assert_eq!(r.batches, vec![batch(1), batch(2), batch(3)]);
        assert_eq!(r.damaged, 0);
        s.clear().unwrap();
        s.append(&batch(4)).unwrap();
        assert_eq!(
            s.read().unwrap().batches,
            vec![batch(4)],
            "cleared, then appended"
        );
    }

    #[test]
    fn a_torn_last_line_is_cut_off_and_the_next_append_is_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let mut s = Spool::open(&path).unwrap();
        s.append(&batch(1)).unwrap();
        drop(s);
        // A crash mid-append: half a line, no newline.
        let whole = serde_json::to_string(&batch(2)).unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&whole.as_bytes()[..whole.len() / 2]).unwrap();
        drop(f);
        let mut s = Spool::open(&path).unwrap();
        assert_eq!(s.len(), 1);
        s.append(&batch(3)).unwrap();
        let r = s.read().unwrap();
        assert_eq!(r.batches, vec![batch(1), batch(3)]);
        assert_eq!(r.damaged, 0);
    }

    #[test]
    fn a_damaged_line_in_the_middle_is_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let mut s = Spool::open(&path).unwrap();
        s.append(&batch(1)).unwrap();
        s.file.write_all(b"{\"key\": garbage}\n").unwrap();
        s.append(&batch(2)).unwrap();
        let r = s.read().unwrap();
        assert_eq!(r.batches, vec![batch(1), batch(2)]);
        assert_eq!(r.damaged, 1);
    }
}
