//! The share check: rebuild the header the miner hashed and compare its hash with the targets.
//!
//! The proxy computes every header hash itself: an accepted share is a valid share, and a
//! block is recognised the moment its hash meets the network target.

use bitcoin::{block, BlockHash, Target};
use mining_types::Extranonce1;

use crate::job::Job;

/// Why a share was refused. Each reason is counted and answered on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    /// A job id we never sent, or one long gone.
    UnknownJob,
    /// A job on a previous block hash that is no longer the tip.
    StaleJob,
    /// The same header was submitted before.
    Duplicate,
    /// The header hash does not meet the connection's share target.
    AboveTarget,
    /// ntime before the template's minimum or too far in the future.
    NtimeOutOfRange,
    /// Version bits outside the negotiated mask.
    BadVersionBits,
    /// extranonce2 of the wrong size or not hex.
    BadExtranonce2,
    /// A field that does not parse.
    Malformed,
    /// Submit before subscribe.
    NotSubscribed,
    /// Submit before authorize.
    Unauthorized,
}

impl Reject {
    /// Every reason, in the order the counters keep them.
    pub const ALL: [Reject; 10] = [
        Reject::UnknownJob,
        Reject::StaleJob,
        Reject::Duplicate,
        Reject::AboveTarget,
        Reject::NtimeOutOfRange,
        Reject::BadVersionBits,
        Reject::BadExtranonce2,
        Reject::Malformed,
        Reject::NotSubscribed,
        Reject::Unauthorized,
    ];

    /// The classic Stratum V1 error code and message (as ckpool and most pools answer).
    pub fn sv1_error(self) -> (i32, &'static str) {
        match self {
            Reject::UnknownJob => (21, "job not found"),
            Reject::StaleJob => (21, "stale job"),
            Reject::Duplicate => (22, "duplicate share"),
            Reject::AboveTarget => (23, "low difficulty share"),
            Reject::NtimeOutOfRange => (20, "ntime out of range"),
            Reject::BadVersionBits => (20, "invalid version bits"),
            Reject::BadExtranonce2 => (20, "invalid extranonce2 size"),
            Reject::Malformed => (20, "malformed submit"),
            Reject::NotSubscribed => (25, "not subscribed"),
            Reject::Unauthorized => (24, "unauthorized worker"),
        }
    }

    /// A short name for logs and counters.
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::UnknownJob => "unknown-job",
            Reject::StaleJob => "stale",
            Reject::Duplicate => "duplicate",
            Reject::AboveTarget => "above-target",
            Reject::NtimeOutOfRange => "ntime",
            Reject::BadVersionBits => "version-bits",
            Reject::BadExtranonce2 => "extranonce2",
            Reject::Malformed => "malformed",
            Reject::NotSubscribed => "not-subscribed",
            Reject::Unauthorized => "unauthorized",
        }
    }
}

/// The fields of one `mining.submit`, decoded.
#[derive(Debug, Clone, Copy)]
pub struct Submission<'a> {
    /// The miner's extranonce2, at the negotiated size.
    pub extranonce2: &'a [u8],
    /// The header time.
    pub ntime: u32,
    /// The header nonce.
    pub nonce: u32,
    /// The 6th parameter, when the miner rolls versions.
    pub version_bits: Option<u32>,
}

/// What a connection checks a share against.
#[derive(Debug, Clone, Copy)]
pub struct ShareCheck {
    /// The negotiated version-rolling mask (0 when none was negotiated).
    pub version_mask: u32,
    /// The connection's share target for this job.
    pub target: Target,
    /// Now, as a Unix timestamp.
    pub now: u32,
    /// How far ahead of `now` ntime may go.
    pub max_future_secs: u32,
}

/// A share that passed.
#[derive(Debug, Clone, Copy)]
pub struct ValidShare {
    /// The header the miner hashed.
    pub header: block::Header,
    /// Its hash.
    pub hash: BlockHash,
    /// The hash meets the network target: this share is a block.
    pub is_block: bool,
}

/// Checks one share against its job.
///
/// # Errors
/// The [`Reject`] reason; never [`Reject::UnknownJob`], [`Reject::StaleJob`] or
/// [`Reject::Duplicate`], which the connection decides from its own history.
pub fn check_share(
    job: &Job,
    extranonce1: &Extranonce1,
    share: &Submission<'_>,
    check: &ShareCheck,
) -> Result<ValidShare, Reject> {
    let en1 = extranonce1.as_bytes();
    if en1.len() + share.extranonce2.len() != job.coinbase.extranonce_len() {
        return Err(Reject::BadExtranonce2);
    }
    let base_version = job.template.version.to_consensus() as u32;
    let version = match share.version_bits {
        None => base_version,
        Some(bits) if bits & !check.version_mask == 0 => {
            (base_version & !check.version_mask) | bits
        }
        // Some firmware sends the whole rolled version rather than just the bits.
        Some(full) if full & !check.version_mask == base_version & !check.version_mask => full,
        Some(_) => return Err(Reject::BadVersionBits),
    };
    let max_time = check
        .now
        .saturating_add(check.max_future_secs)
        .max(job.template.cur_time);
    if share.ntime < job.template.min_time || share.ntime > max_time {
        return Err(Reject::NtimeOutOfRange);
    }
    let txid = job.coinbase.txid(&[en1, share.extranonce2]);
    let version = block::Version::from_consensus(version as i32);
    let header = job.header(txid, version, share.ntime, share.nonce);
    let hash = header.block_hash();
    if !check.target.is_met_by(hash) {
        return Err(Reject::AboveTarget);
    }
    let is_block = job.template.network_target().is_met_by(hash);
    Ok(ValidShare {
        header,
        hash,
        is_block,
    })
}

#[cfg(test)]
mod tests {
    use bitcoin::consensus::deserialize;
    use bitcoin::Block;
    use mining_types::{Extranonce1, Solution};

    use super::*;
    use crate::share::Difficulty;
    use crate::test_support::{self, layout};

    fn job() -> (std::sync::Arc<Job>, Extranonce1) {
        (test_support::job(1), Extranonce1::from_counter(1, layout()))
    }

    fn check(difficulty: f64) -> ShareCheck {
        ShareCheck {
            version_mask: 0x1fff_e000,
            target: Difficulty::new(difficulty).unwrap().target(),
            now: 1_700_000_100,
            max_future_secs: 600,
        }
    }

    fn share(nonce: u32) -> Submission<'static> {
        Submission {
            extranonce2: &[0, 0, 0, 7],
            ntime: 1_700_000_100,
            nonce,
            version_bits: Some(0x0000_2000),
        }
    }

    #[test]
    fn a_block_share_assembles_into_a_valid_block() {
        let (job, en1) = job();
        // Regtest: about every second nonce is a block.
        let (nonce, valid) = (0..64)
            .find_map(|n| {
                check_share(&job, &en1, &share(n), &check(1e-12))
                    .ok()
                    .filter(|v| v.is_block)
                    .map(|v| (n, v))
            })
            .expect("a block within 64 nonces");
        assert_eq!(valid.header.nonce, nonce);
        assert_eq!(
            valid.header.version.to_consensus(),
            0x2000_2000,
            "rolled bit applied"
        );
        assert!(valid
            .header
            .validate_pow(job.template.network_target())
            .is_ok());
        let mut en = en1.as_bytes().to_vec();
        en.extend_from_slice(&[0, 0, 0, 7]);
        let solution = Solution::from_split(job.template.id, &valid.header, &job.coinbase, &en);
        let raw = solution.assemble(&job.template).expect("assembles").bytes;
        let block: Block = deserialize(&raw).expect("a block that decodes");
        assert_eq!(block.block_hash(), valid.hash);
        assert_eq!(block.txdata.len(), 4);
        assert!(
            block.check_merkle_root(),
            "merkle root from the branch matches the full tree"
        );
        assert!(
            block.check_witness_commitment(),
            "coinbase witness and commitment agree"
        );
        assert_eq!(block.bip34_block_height(), Ok(500));
    }

    #[test]
    fn shares_that_miss_the_network_target_are_shares_only() {
        let (job, en1) = job();
        let v = (0..64)
            .find_map(|n| {
                check_share(&job, &en1, &share(n), &check(1e-12))
                    .ok()
                    .filter(|v| !v.is_block)
            })
            .expect("a non-block within 64 nonces");
        assert!(!job.template.network_target().is_met_by(v.hash));
    }

    #[test]
    fn each_reject_reason() {
        let (job, en1) = job();
        let mut s = share(1);
        assert_eq!(
            check_share(&job, &en1, &s, &check(1e12)).unwrap_err(),
            Reject::AboveTarget
        );
        s.version_bits = Some(0x0000_0001);
        assert_eq!(
            check_share(&job, &en1, &s, &check(1e-12)).unwrap_err(),
            Reject::BadVersionBits
        );
        s.version_bits = Some(0x2000_4000); // the whole rolled version, as some firmware sends
        assert_eq!(
            check_share(&job, &en1, &s, &check(1e-12))
                .unwrap()
                .header
                .version
                .to_consensus(),
            0x2000_4000
        );
        s.version_bits = None;
        s.ntime = 1_699_999_999;
        assert_eq!(
            check_share(&job, &en1, &s, &check(1e-12)).unwrap_err(),
            Reject::NtimeOutOfRange
        );
        s.ntime = 1_700_000_100 + 601;
        assert_eq!(
            check_share(&job, &en1, &s, &check(1e-12)).unwrap_err(),
            Reject::NtimeOutOfRange
        );
        s.ntime = 1_700_000_100;
        s.extranonce2 = &[1, 2];
        assert_eq!(
            check_share(&job, &en1, &s, &check(1e-12)).unwrap_err(),
            Reject::BadExtranonce2
        );
    }
}
