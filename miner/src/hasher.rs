//! The hashing loop: one dedicated OS thread per miner, fed through a [`WorkSlot`].

use crate::work::{build_header, header_bytes, roll_version, Job};
use crate::Stats;
use bitcoin::hashes::{sha256, Hash, HashEngine};
use bitcoin::BlockHash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Everything the hashing thread needs for one job.
#[derive(Debug)]
pub(crate) struct Work {
    /// Increases with every dispatched work unit.
    pub generation: u64,
    pub job: Arc<Job>,
    pub extranonce1: Vec<u8>,
    pub extranonce2_size: usize,
    /// Share target, little-endian (compare with the raw sha256d output).
    pub target_le: [u8; 32],
    /// Negotiated version-rolling mask, if any.
    pub version_mask: Option<u32>,
}

/// A share found by the hashing thread.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub generation: u64,
    pub job_id: String,
    pub extranonce2: Vec<u8>,
    pub ntime: u32,
    pub nonce: u32,
    /// `version & mask`, when version rolling was negotiated for this work.
    pub version_bits: Option<u32>,
    pub block_hash: BlockHash,
}

/// Hand-over point between the async session and its hashing thread.
#[derive(Debug, Default)]
pub(crate) struct WorkSlot {
    work: Mutex<Option<Arc<Work>>>,
    cond: Condvar,
    generation: AtomicU64,
    stop: AtomicBool,
}

impl WorkSlot {
    pub fn set(&self, work: Work) {
        let generation = work.generation;
        let mut w = self.work.lock().unwrap_or_else(PoisonError::into_inner);
        *w = Some(Arc::new(work));
        self.generation.store(generation, Ordering::SeqCst);
        self.cond.notify_all();
    }

    pub fn stop(&self) {
        let _w = self.work.lock().unwrap_or_else(PoisonError::into_inner);
        self.stop.store(true, Ordering::SeqCst);
        self.cond.notify_all();
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn changed(&self, generation: u64) -> bool {
        self.stopped() || self.generation.load(Ordering::Relaxed) != generation
    }

    /// Blocks until there is work of a generation other than `not_generation`; `None` once stopped.
    fn wait_for_work(&self, not_generation: u64) -> Option<Arc<Work>> {
        let mut w = self.work.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if self.stopped() {
                return None;
            }
            if let Some(work) = w.as_ref() {
                if work.generation != not_generation {
                    return Some(work.clone());
                }
            }
            w = self
                .cond
                .wait_timeout(w, Duration::from_millis(200))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Sleeps up to `dur`, waking early when the work changes or the slot is stopped.
    fn sleep_unless_changed(&self, generation: u64, dur: Duration) {
        let deadline = Instant::now() + dur;
        let mut w = self.work.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if self.changed(generation) {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            w = self
                .cond
                .wait_timeout(w, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// Stops the slot when dropped, so the hashing thread ends with its session.
pub(crate) struct StopOnDrop(pub Arc<WorkSlot>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// Keeps a thread at or under `max_hashrate` hashes per second.
struct Limiter {
    rate: Option<f64>,
    start: Instant,
    hashes: u64,
}

impl Limiter {
    fn new(rate: Option<f64>) -> Limiter {
        let rate = rate.filter(|r| r.is_finite() && *r > 0.0);
        Limiter {
            rate,
            start: Instant::now(),
            hashes: 0,
        }
    }

    /// Hashes per batch: about 10 ms of work when capped, else 1024.
    fn batch_size(&self) -> u64 {
        match self.rate {
            Some(r) => ((r / 100.0) as u64).clamp(1, 4096),
            None => 1024,
        }
    }

    /// Records a batch; returns how long to sleep to stay under the cap.
    fn after_batch(&mut self, n: u64) -> Option<Duration> {
        let rate = self.rate?;
        self.hashes += n;
        let elapsed = self.start.elapsed().as_secs_f64();
        let due = self.hashes as f64 / rate;
        if elapsed > due + 0.5 {
            // We fell behind (idle, or a slow machine): don't burst to catch up.
            self.start = Instant::now();
            self.hashes = 0;
            return None;
        }
        (due > elapsed).then(|| Duration::from_secs_f64(due - elapsed))
    }
}

/// `true` when `hash` (raw sha256d bytes) read as a little-endian number is `<= target_le`.
pub(crate) fn meets_target(hash: &[u8; 32], target_le: &[u8; 32]) -> bool {
    for i in (0..32).rev() {
        if hash[i] != target_le[i] {
            return hash[i] < target_le[i];
        }
    }
    true
}

/// Deposits the low bits of `v` into the set bits of `mask` (like x86 `pdep`).
fn spread_bits(mut v: u64, mask: u32) -> u32 {
    let mut out = 0u32;
    for bit in 0..32 {
        if mask & (1 << bit) != 0 {
            if v & 1 == 1 {
                out |= 1 << bit;
            }
            v >>= 1;
        }
    }
    out
}

fn encode_extranonce2(counter: u64, size: usize) -> Vec<u8> {
    let mut out = vec![0u8; size];
    let be = counter.to_be_bytes();
    let n = size.min(8);
    out[size - n..].copy_from_slice(&be[8 - n..]);
    out
}

/// Why [`search`] returned.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SearchEnd {
    /// `on_batch` or `on_found` asked to stop.
    Interrupted,
    /// Every extranonce2 × version × nonce combination was tried.
    Exhausted,
}

/// Searches `work` in order extranonce2 (outermost) → rolled version → nonce in `0..nonce_end`.
///
/// With a version mask, the first version tried for every extranonce2 already has the lowest
/// mask bit set (as ASICs submit rolled versions), and the unrolled version comes last.
/// `on_batch(hashes)` runs after every batch of `batch` hashes; `on_found` for each share.
/// Either returning `false` ends the search.
pub(crate) fn search(
    work: &Work,
    nonce_end: u64,
    batch: u64,
    mut on_batch: impl FnMut(u64) -> bool,
    mut on_found: impl FnMut(Found) -> bool,
) -> SearchEnd {
    let job = &work.job;
    let en2_count: u64 = if work.extranonce2_size >= 8 {
        u64::MAX
    } else {
        1u64 << (8 * work.extranonce2_size)
    };
    let (mask, version_count) = match work.version_mask {
        Some(m) if m != 0 => (m, 1u64 << m.count_ones()),
        _ => (0, 1),
    };
    let batch = batch.max(1);
    for en2_counter in 0..en2_count {
        let extranonce2 = encode_extranonce2(en2_counter, work.extranonce2_size);
        for vi in 0..version_count {
            let bits = spread_bits((vi + 1) % version_count, mask);
            let version = roll_version(job.version, mask, bits);
            let header = build_header(job, &work.extranonce1, &extranonce2, version, job.ntime, 0);
            let mut bytes = header_bytes(&header);
            let mut midstate = sha256::Hash::engine();
            midstate.input(&bytes[..64]);
            let mut nonce: u64 = 0;
            while nonce < nonce_end {
                let end = (nonce + batch).min(nonce_end);
                for n in nonce..end {
                    bytes[76..80].copy_from_slice(&(n as u32).to_le_bytes());
                    let mut e = midstate.clone();
                    e.input(&bytes[64..80]);
                    let first = sha256::Hash::from_engine(e);
                    let hash = sha256::Hash::hash(first.as_byte_array()).to_byte_array();
                    if meets_target(&hash, &work.target_le) {
                        let found = Found {
                            generation: work.generation,
                            job_id: job.job_id.clone(),
                            extranonce2: extranonce2.clone(),
                            ntime: job.ntime,
                            nonce: n as u32,
                            version_bits: work.version_mask.map(|m| version & m),
                            block_hash: BlockHash::from_byte_array(hash),
                        };
                        if !on_found(found) {
                            return SearchEnd::Interrupted;
                        }
                    }
                }
                if !on_batch(end - nonce) {
                    return SearchEnd::Interrupted;
                }
                nonce = end;
            }
        }
    }
    SearchEnd::Exhausted
}

/// The hashing thread's body: mines the slot's newest work until the slot is stopped or the
/// share receiver is gone. Shares go out through a bounded channel, so a slow connection
/// slows hashing instead of queueing shares without limit.
pub(crate) fn run(
    slot: &WorkSlot,
    found_tx: &tokio::sync::mpsc::Sender<Found>,
    stats: &Stats,
    max_hashrate: Option<f64>,
) {
    if max_hashrate.is_some_and(|r| r <= 0.0) {
        // An idle miner: it keeps its connection but never hashes.
        while slot.wait_for_work(u64::MAX).is_some() {
            slot.sleep_unless_changed(
                slot.generation.load(Ordering::Relaxed),
                Duration::from_secs(3600),
            );
        }
        return;
    }
    let mut limiter = Limiter::new(max_hashrate);
    let mut last_generation = 0;
    let mut receiver_gone = false;
    while let Some(work) = slot.wait_for_work(last_generation) {
        last_generation = work.generation;
        let generation = work.generation;
        let end = search(
            &work,
            1 << 32,
            limiter.batch_size(),
            |n| {
                stats.hashes.fetch_add(n, Ordering::Relaxed);
                if let Some(d) = limiter.after_batch(n) {
                    slot.sleep_unless_changed(generation, d);
                }
                !slot.changed(generation)
            },
            |found| {
                if found_tx.blocking_send(found).is_err() {
                    receiver_gone = true;
                    return false;
                }
                !slot.changed(generation)
            },
        );
        if receiver_gone {
            return;
        }
        if end == SearchEnd::Exhausted {
            tracing::debug!(generation, "work exhausted; waiting for a new job");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job {
            job_id: "j".into(),
            prevhash: BlockHash::from_byte_array([7; 32]),
            coinb1: vec![1, 2, 3],
            coinb2: vec![4, 5],
            merkle_branch: vec![[9; 32]],
            version: 0x2000_0000,
            nbits: 0x207f_ffff,
            ntime: 0x6000_0000,
            clean: true,
        }
    }

    fn work(mask: Option<u32>, en2_size: usize) -> Work {
        Work {
            generation: 1,
            job: Arc::new(job()),
            extranonce1: vec![0xaa, 0xbb],
            extranonce2_size: en2_size,
            target_le: [0xff; 32],
            version_mask: mask,
        }
    }

    #[test]
    fn every_hash_meets_max_target_and_rebuilds() {
        let w = work(Some(0x1fff_e000), 4);
        let mut found = vec![];
        let end = search(
            &w,
            1 << 32,
            2,
            |_| true,
            |f| {
                found.push(f);
                found.len() < 3
            },
        );
        assert_eq!(end, SearchEnd::Interrupted);
        assert_eq!(found.len(), 3);
        for f in &found {
            let version = roll_version(0x2000_0000, 0x1fff_e000, f.version_bits.unwrap());
            let h = build_header(
                &w.job,
                &w.extranonce1,
                &f.extranonce2,
                version,
                f.ntime,
                f.nonce,
            );
            assert_eq!(h.block_hash(), f.block_hash);
        }
        // The first version tried already carries rolled bits.
        assert_eq!(found[0].version_bits, Some(0x2000));
        assert_eq!(found[0].extranonce2, vec![0, 0, 0, 0]);
    }

    #[test]
    fn rolls_version_then_extranonce2_when_nonces_run_out() {
        // Two mask bits: versions 01, 10, 11, 00; one byte of extranonce2.
        let w = work(Some(0b110), 1);
        let mut seen = vec![];
        let end = search(
            &w,
            2,
            10,
            |_| true,
            |f| {
                seen.push((f.extranonce2[0], f.version_bits.unwrap(), f.nonce));
                seen.len() < 16
            },
        );
        assert_eq!(end, SearchEnd::Interrupted);
        assert_eq!(
            &seen[..10],
            &[
                (0, 2, 0),
                (0, 2, 1),
                (0, 4, 0),
                (0, 4, 1),
                (0, 6, 0),
                (0, 6, 1),
                (0, 0, 0),
                (0, 0, 1),
                (1, 2, 0),
                (1, 2, 1)
            ]
        );
        // Without rolling: only extranonce2 moves, and the space ends.
        let w = work(None, 1);
        let mut n = 0;
        assert_eq!(
            search(
                &w,
                1,
                1,
                |_| true,
                |f| {
                    assert_eq!(f.version_bits, None);
                    assert_eq!(f.extranonce2, vec![n as u8]);
                    n += 1;
                    true
                }
            ),
            SearchEnd::Exhausted
        );
        assert_eq!(n, 256);
    }

    #[test]
    fn zero_target_finds_nothing_and_batches_are_reported() {
        let mut w = work(None, 0);
        w.target_le = [0; 32];
        let mut batches = vec![];
        let end = search(
            &w,
            10,
            4,
            |n| {
                batches.push(n);
                true
            },
            |_| panic!("no share expected"),
        );
        assert_eq!(end, SearchEnd::Exhausted);
        assert_eq!(batches, vec![4, 4, 2]);
    }

    #[test]
    fn helpers() {
        assert_eq!(spread_bits(0b101, 0x1fff_e000), 0x0000_a000);
        assert_eq!(spread_bits(u64::MAX, 0x1fff_e000), 0x1fff_e000);
        assert_eq!(encode_extranonce2(0x0102, 4), vec![0, 0, 1, 2]);
        assert_eq!(encode_extranonce2(0x0102, 1), vec![2]);
        assert_eq!(
            encode_extranonce2(1, 10),
            vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
        );
        assert!(encode_extranonce2(5, 0).is_empty());
        let mut t = [0u8; 32];
        t[31] = 0x10;
        let mut h = [0xffu8; 32];
        h[31] = 0x0f;
        assert!(meets_target(&h, &t));
        h[31] = 0x10;
        assert!(!meets_target(&h, &t));
        assert!(meets_target(&t, &t));
        let mut l = Limiter::new(Some(1000.0));
        assert_eq!(l.batch_size(), 10);
        assert!(l.after_batch(500).unwrap() > Duration::from_millis(400));
        assert_eq!(Limiter::new(None).after_batch(1 << 40), None);
    }
}
