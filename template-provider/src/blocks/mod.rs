//! Found blocks: journaled, then submitted to every configured node until each gives a
//! verdict. Used by the proxy for blocks on the farm's templates and by the Template
//! Distribution server for its clients' solutions.
//!
//! A block is appended to the [`journal`] and synced before anything else happens to it. Then
//! each node gets it at once, in a task of its own on the tracker, and is tried again (every
//! second at most) while it cannot be reached: a node restarting for an upgrade gets the block
//! the moment it answers. A node is given up only when the chain has moved
//! [`GIVE_UP_DEPTH`] blocks past the block, since it can then never be the tip. Every verdict
//! goes to the journal; at start, the journal's blocks that some node has not judged are
//! submitted again.
//!
//! If the journal cannot be written (a full disk past the ballast, a broken file), the whole
//! block is logged at error level, in hex, and still submitted: it is kept in memory for as
//! long as its submissions run. The log never says a block is on disk when it is not.

pub mod fds;
pub mod journal;

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bitcoin::BlockHash;
use mining_types::Template;
use tokio::sync::{broadcast, watch};
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use self::fds::FdReserve;
use self::journal::{unix_now, Entry, Journal, Record};
use crate::node::rpc::RpcClient;
use crate::node::{NodeError, Verdict};

/// A node given up once the chain is this many blocks past the block.
pub const GIVE_UP_DEPTH: u32 = 6;
/// Retries of an unreachable node start this far apart...
const RETRY_FIRST: Duration = Duration::from_millis(250);
/// ... and grow to at most this: a node back from a restart gets its blocks within a second.
const RETRY_MAX: Duration = Duration::from_secs(1);
/// Disk space held for the journal.
pub const BALLAST_BYTES: u64 = 64 << 20;

/// A node blocks are submitted to.
#[derive(Debug, Clone)]
pub struct Node {
    /// Its name in logs and the journal (its RPC URL unless configured).
    pub name: String,
    /// Its RPC.
    pub rpc: RpcClient,
}

/// A solved block, serialized.
#[derive(Debug, Clone)]
pub struct FoundBlock {
    /// Its hash.
    pub hash: BlockHash,
    /// Its height.
    pub height: u32,
    /// The whole block.
    pub bytes: Vec<u8>,
    /// Who found it, for logs.
    pub found_by: String,
}

/// Journals and submits blocks; cheap to clone.
#[derive(Debug, Clone)]
pub struct Blocks {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    journal: Mutex<Option<Journal>>,
    nodes: Vec<Node>,
    /// The newest template: the chain's height as the template source knows it.
    templates: watch::Receiver<Arc<Template>>,
    reserve: Arc<FdReserve>,
    tracker: TaskTracker,
    /// Every found block and every verdict, as they happen, for whoever shows them.
    news: broadcast::Sender<BlockNews>,
    /// Blocks journaled by this process or found in the journal at start: a block handed over
    /// twice (a client sending it again on a new link) is journaled and submitted once.
    known: Mutex<HashSet<BlockHash>>,
}

/// Past this many known blocks the set starts again: a farm finds a handful a year, and a
/// block handed over twice comes within seconds.
const KNOWN_MAX: usize = 4096;

/// What happened to a block, as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockNews {
    /// A block was handed over (before it is journaled).
    Found {
        /// Its hash.
        hash: BlockHash,
        /// Its height.
        height: u32,
        /// Who found it.
        found_by: String,
    },
    /// A node judged it.
    Fate {
        /// The block.
        hash: BlockHash,
        /// The node's name.
        node: String,
        /// As journaled: `accepted`, `duplicate`, `inconclusive`, `rejected: <reason>`, or
        /// `abandoned: ...`.
        fate: String,
    },
}

/// News kept for a reader that fell behind.
const NEWS_KEPT: usize = 256;

/// Whether a block made it to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Journaled {
    /// Synced to the journal.
    OnDisk,
    /// Not written: the block is logged in hex and kept in memory while it is submitted.
    InMemoryOnly,
}

impl Blocks {
    /// Opens the journal in `dir` and submits to `nodes` whatever it holds unresolved.
    /// `templates` tells when a block is past saving; tasks run on `tracker`.
    ///
    /// # Errors
    /// The journal cannot be opened: a start-up error the operator must see, since blocks
    /// would otherwise live only in memory.
    pub fn start(
        dir: &Path,
        nodes: Vec<Node>,
        templates: watch::Receiver<Arc<Template>>,
        tracker: &TaskTracker,
    ) -> std::io::Result<Blocks> {
        let (journal, entries) = Journal::open(dir, BALLAST_BYTES)?;
        info!(path = %journal.path().display(), blocks = entries.len(), "block journal open");
        let blocks = Blocks {
            inner: Arc::new(Inner {
                journal: Mutex::new(Some(journal)),
                nodes,
                templates,
                reserve: Arc::new(FdReserve::new(fds::RESERVED)),
                tracker: tracker.clone(),
                news: broadcast::Sender::new(NEWS_KEPT),
                known: Mutex::new(entries.iter().map(|e| e.hash).collect()),
            }),
        };
        blocks.resubmit(entries);
        Ok(blocks)
    }

    /// The descriptors held back for submissions: whoever accepts connections asks it first.
    pub fn fd_reserve(&self) -> Arc<FdReserve> {
        self.inner.reserve.clone()
    }

    /// Blocks found and their fates from now on. A reader more than [`NEWS_KEPT`] behind
    /// misses the oldest (the journal has them all).
    pub fn news(&self) -> broadcast::Receiver<BlockNews> {
        self.inner.news.subscribe()
    }

    /// The nodes blocks go to.
    pub fn nodes(&self) -> &[Node] {
        &self.inner.nodes
    }

    /// Journals `block` (synced before this returns), then submits it to every node in tasks
    /// of their own.
    pub async fn found(&self, block: FoundBlock) -> Journaled {
        if !self.first_time(block.hash) {
            info!(hash = %block.hash, height = block.height, found_by = %block.found_by, "block handed over again: it is already journaled and being submitted");
            return Journaled::OnDisk;
        }
        let _ = self.inner.news.send(BlockNews::Found {
            hash: block.hash,
            height: block.height,
            found_by: block.found_by.clone(),
        });
        let block = Arc::new(block);
        let hex = Arc::new(hex::encode(&block.bytes));
        let record = Record::Found {
            hash: block.hash,
            height: block.height,
            found_by: block.found_by.clone(),
            at: unix_now(),
            block: hex.to_string(),
        };
        let journaled = self.append(record).await;
        match &journaled {
            Ok(()) => {
                info!(hash = %block.hash, height = block.height, "block written to the journal");
            }
            Err(e) => {
                error!(hash = %block.hash, height = block.height, error = %e, block = %hex, "BLOCK NOT ON DISK: the journal cannot be written; the whole block is in this line, submit it by hand with bitcoin-cli submitblock if the nodes below do not take it");
            }
        }
        for node in &self.inner.nodes {
            self.spawn_submission(block.clone(), hex.clone(), node.clone());
        }
        if journaled.is_ok() {
            Journaled::OnDisk
        } else {
            Journaled::InMemoryOnly
        }
    }

    /// Appends on a blocking thread: a sync is milliseconds the runtime must not wait for.
    async fn append(&self, record: Record) -> std::io::Result<()> {
        let inner = self.inner.clone();
        let write = tokio::task::spawn_blocking(move || {
            let mut journal = inner.journal.lock().unwrap_or_else(PoisonError::into_inner);
            match journal.as_mut() {
                Some(j) => j.append(&record),
                None => Err(std::io::Error::other("the journal is closed")),
            }
        });
        write
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }

    /// Whether `hash` is new to this journal; remembers it.
    fn first_time(&self, hash: BlockHash) -> bool {
        let mut known = self
            .inner
            .known
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if known.len() >= KNOWN_MAX {
            known.clear();
        }
        known.insert(hash)
    }

    fn resubmit(&self, entries: Vec<Entry>) {
        for entry in entries {
            let pending: Vec<Node> = self
                .inner
                .nodes
                .iter()
                .filter(|n| !entry.fates.contains_key(&n.name))
                .cloned()
                .collect();
            if pending.is_empty() {
                continue;
            }
            let Ok(bytes) = hex::decode(&entry.block) else {
                warn!(hash = %entry.hash, "journaled block is not hex; skipped");
                continue;
            };
            warn!(hash = %entry.hash, height = entry.height, nodes = pending.len(), "a journaled block has no verdict yet: submitting it again");
            let block = Arc::new(FoundBlock {
                hash: entry.hash,
                height: entry.height,
                bytes,
                found_by: entry.found_by,
            });
            let hex = Arc::new(entry.block);
            for node in pending {
                self.spawn_submission(block.clone(), hex.clone(), node);
            }
        }
    }

    fn spawn_submission(&self, block: Arc<FoundBlock>, hex: Arc<String>, node: Node) {
        let this = self.clone();
        self.inner.tracker.spawn(async move {
            let fate = this.submit_until_verdict(&block, &hex, &node).await;
            let _ = this.inner.news.send(BlockNews::Fate {
                hash: block.hash,
                node: node.name.clone(),
                fate: fate.clone(),
            });
            let record = Record::Fate {
                hash: block.hash,
                node: node.name.clone(),
                fate,
                at: unix_now(),
            };
            if let Err(e) = this.append(record).await {
                warn!(hash = %block.hash, node = %node.name, error = %e, "the block's fate could not be journaled");
            }
        });
    }

    /// Submits until the node gives a verdict or the chain leaves the block behind; the fate.
    async fn submit_until_verdict(&self, block: &FoundBlock, hex: &str, node: &Node) -> String {
        let mut wait = RETRY_FIRST;
        let mut failures = 0u32;
        let mut short_of_fds = None;
        loop {
            let why_again = match node.rpc.submit_block(hex).await {
                Ok(reason) => match Verdict::from_submitblock(reason) {
                    Verdict::MissingParent => "the node lacks its parent".to_owned(),
                    verdict => {
                        log_verdict(block, node, &verdict, failures);
                        return verdict.fate();
                    }
                },
                Err(e) => {
                    if fds::is_fd_exhaustion(&e) {
                        self.inner.reserve.release();
                        short_of_fds.get_or_insert_with(|| self.inner.reserve.waiting());
                    }
                    let e = NodeError::from(e);
                    format!("{e} ({} side)", e.side())
                }
            };
            failures += 1;
            let next = self.inner.templates.borrow().height;
            if next > block.height.saturating_add(GIVE_UP_DEPTH) {
                error!(hash = %block.hash, height = block.height, node = %node.name, chain_height = next - 1, why = %why_again, block = hex, "node never took the block and the chain has moved past it; giving up (the block is in this line)");
                return format!("abandoned: chain at {}, {why_again}", next - 1);
            }
            if failures == 1 || failures.is_multiple_of(30) {
                warn!(hash = %block.hash, node = %node.name, attempt = failures, why = %why_again, "no verdict on the block yet; submitting it again until the node gives one");
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(RETRY_MAX);
        }
    }
}

fn log_verdict(block: &FoundBlock, node: &Node, verdict: &Verdict, failures: u32) {
    let (hash, height, node, by) = (block.hash, block.height, &node.name, &block.found_by);
    match verdict {
        Verdict::Accepted => {
            info!(%hash, height, %node, found_by = %by, retries = failures, "block accepted by the node");
        }
        Verdict::Duplicate => info!(%hash, height, %node, "node already has the block (duplicate)"),
        Verdict::Inconclusive => {
            warn!(%hash, height, %node, "node took the block but not as its tip: a competing block at the same height came first");
        }
        Verdict::Rejected(reason) => {
            error!(%hash, height, %node, %reason, "node REJECTED the block");
        }
        Verdict::MissingParent => {}
    }
}

#[cfg(test)]
mod tests {
    use bitcoin::hashes::Hash;
    use bitcoin::{Amount, CompactTarget, Network};
    use mining_types::{TemplateId, TemplateKind};

    use super::*;

    fn template() -> Template {
        Template {
            id: TemplateId::new(1),
            kind: TemplateKind::Empty,
            network: Network::Regtest,
            height: 101,
            prev_hash: BlockHash::all_zeros(),
            version: bitcoin::block::Version::from_consensus(0x2000_0000),
            bits: CompactTarget::from_consensus(0x207f_ffff),
            min_time: 0,
            cur_time: 0,
            coinbase_value: Amount::from_sat(5_000_000_000),
            witness_commitment: None,
            txs: Arc::new(vec![]),
            merkle_path: vec![],
        }
    }

    fn block(n: u8) -> FoundBlock {
        FoundBlock {
            hash: BlockHash::from_byte_array([n; 32]),
            height: 101,
            bytes: vec![n; 81],
            found_by: "test".into(),
        }
    }

    /// A client that sends a block again on a new link (it never heard the first one arrive)
    /// must not make a second journal entry, nor a second submission; after a restart the
    /// journal's blocks count as known too.
    #[tokio::test]
    async fn a_block_handed_over_twice_is_journaled_once() {
        let dir = tempfile::tempdir().unwrap();
        let tracker = TaskTracker::new();
        let (_tx, templates) = watch::channel(Arc::new(template()));
        let blocks = Blocks::start(dir.path(), vec![], templates.clone(), &tracker).unwrap();
        assert_eq!(blocks.found(block(1)).await, Journaled::OnDisk);
        assert_eq!(blocks.found(block(1)).await, Journaled::OnDisk);
        assert_eq!(blocks.found(block(2)).await, Journaled::OnDisk);
        drop(blocks);
        let (_, entries) = Journal::open(dir.path(), BALLAST_BYTES).unwrap();
        assert_eq!(entries.len(), 2, "{entries:?}");

        let again = Blocks::start(dir.path(), vec![], templates, &tracker).unwrap();
        again.found(block(2)).await;
        drop(again);
        let (_, entries) = Journal::open(dir.path(), BALLAST_BYTES).unwrap();
        assert_eq!(
            entries.len(),
            2,
            "known from the journal at start: {entries:?}"
        );
    }
}
