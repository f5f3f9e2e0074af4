//! Pure Stratum V1 work handling: `mining.notify` decoding, coinbase/merkle root and header building.

use anyhow::{anyhow, bail, Context, Result};
use bitcoin::block::{Header, Version};
use bitcoin::hashes::{sha256d, Hash};
use bitcoin::{BlockHash, CompactTarget, TxMerkleNode};
use serde_json::Value;

/// One job, as decoded from `mining.notify` params.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The server's job id, echoed in `mining.submit`.
    pub job_id: String,
    /// The parent block hash in header order (the `prev_blockhash` header field).
    pub prevhash: BlockHash,
    /// The coinbase transaction up to extranonce1.
    pub coinb1: Vec<u8>,
    /// The coinbase transaction after extranonce2.
    pub coinb2: Vec<u8>,
    /// Merkle branch hashes, internal byte order.
    pub merkle_branch: Vec<[u8; 32]>,
    /// The block version before rolling.
    pub version: u32,
    /// The network target, compact form.
    pub nbits: u32,
    /// The header time.
    pub ntime: u32,
    /// Whether earlier jobs are void (`clean_jobs`).
    pub clean: bool,
}

impl Job {
    /// Decodes `mining.notify` params:
    /// `[job_id, prevhash, coinb1, coinb2, [branch...], version, nbits, ntime, clean_jobs]`.
    pub fn from_notify_params(params: &Value) -> Result<Job> {
        let p = params
            .as_array()
            .ok_or_else(|| anyhow!("notify params are not an array"))?;
        if p.len() < 9 {
            bail!("notify has {} params, expected 9", p.len());
        }
        let s = |i: usize, what: &str| -> Result<&str> {
            p[i].as_str()
                .ok_or_else(|| anyhow!("notify {what} is not a string"))
        };
        let job_id = match &p[0] {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => bail!("notify job_id is not a string"),
        };
        let prevhash = decode_prevhash(s(1, "prevhash")?)?;
        let coinb1 = hex::decode(s(2, "coinb1")?).context("coinb1 hex")?;
        let coinb2 = hex::decode(s(3, "coinb2")?).context("coinb2 hex")?;
        let branch = p[4]
            .as_array()
            .ok_or_else(|| anyhow!("notify merkle_branch is not an array"))?;
        let merkle_branch = branch
            .iter()
            .map(|b| {
                let h = b
                    .as_str()
                    .ok_or_else(|| anyhow!("merkle branch entry is not a string"))?;
                hex32(h).context("merkle branch entry")
            })
            .collect::<Result<Vec<_>>>()?;
        let version = parse_u32_hex(s(5, "version")?).context("version")?;
        let nbits = parse_u32_hex(s(6, "nbits")?).context("nbits")?;
        let ntime = parse_u32_hex(s(7, "ntime")?).context("ntime")?;
        let clean = match &p[8] {
            Value::Bool(b) => *b,
            Value::Null => false,
            Value::Number(n) => n.as_u64().unwrap_or(0) != 0,
            Value::String(s) => s == "true" || s == "1",
            _ => false,
        };
        Ok(Job {
            job_id,
            prevhash,
            coinb1,
            coinb2,
            merkle_branch,
            version,
            nbits,
            ntime,
            clean,
        })
    }

    /// The coinbase transaction bytes: `coinb1 || extranonce1 || extranonce2 || coinb2`.
    pub fn coinbase(&self, extranonce1: &[u8], extranonce2: &[u8]) -> Vec<u8> {
        let mut c = Vec::with_capacity(
            self.coinb1.len() + extranonce1.len() + extranonce2.len() + self.coinb2.len(),
        );
        c.extend_from_slice(&self.coinb1);
        c.extend_from_slice(extranonce1);
        c.extend_from_slice(extranonce2);
        c.extend_from_slice(&self.coinb2);
        c
    }
}

/// Parses an 8-hex-digit big-endian rendering of a u32 (shorter strings are accepted too,
/// as some firmware drops leading zeros).
pub fn parse_u32_hex(s: &str) -> Result<u32> {
    let s = s.trim_start_matches("0x");
    if s.is_empty() || s.len() > 8 {
        bail!("bad u32 hex {s:?}");
    }
    u32::from_str_radix(s, 16).map_err(|e| anyhow!("bad u32 hex {s:?}: {e}"))
}

fn hex32(s: &str) -> Result<[u8; 32]> {
    let v = hex::decode(s)?;
    v.try_into()
        .map_err(|v: Vec<u8>| anyhow!("expected 32 bytes, got {}", v.len()))
}

/// Swaps the bytes inside each 4-byte word (the stratum prevhash quirk; it is its own inverse).
fn swap_words(b: [u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (o, i) in out.chunks_exact_mut(4).zip(b.chunks_exact(4)) {
        o.copy_from_slice(&[i[3], i[2], i[1], i[0]]);
    }
    out
}

/// Decodes a `mining.notify` prevhash (internal-order bytes with each 4-byte word
/// byte-reversed) into the header's `prev_blockhash`.
pub fn decode_prevhash(s: &str) -> Result<BlockHash> {
    Ok(BlockHash::from_byte_array(swap_words(
        hex32(s).context("prevhash")?,
    )))
}

/// The inverse of [`decode_prevhash`]: renders a parent block hash the way `mining.notify` sends it.
pub fn encode_prevhash(hash: &BlockHash) -> String {
    hex::encode(swap_words(hash.to_byte_array()))
}

/// The merkle root for a coinbase and its branch: `root = sha256d(root || branch_i)`,
/// starting from the coinbase txid.
pub fn merkle_root(coinbase: &[u8], branch: &[[u8; 32]]) -> TxMerkleNode {
    let mut root = sha256d::Hash::hash(coinbase).to_byte_array();
    let mut buf = [0u8; 64];
    for b in branch {
        buf[..32].copy_from_slice(&root);
        buf[32..].copy_from_slice(b);
        root = sha256d::Hash::hash(&buf).to_byte_array();
    }
    TxMerkleNode::from_byte_array(root)
}

/// Rolls version bits: `(job_version & !mask) | (bits & mask)`.
pub fn roll_version(job_version: u32, mask: u32, bits: u32) -> u32 {
    (job_version & !mask) | (bits & mask)
}

/// Builds the 80-byte header a miner hashes for `job` with the given extranonces,
/// (possibly rolled) `version`, `ntime` and `nonce`.
pub fn build_header(
    job: &Job,
    extranonce1: &[u8],
    extranonce2: &[u8],
    version: u32,
    ntime: u32,
    nonce: u32,
) -> Header {
    Header {
        version: Version::from_consensus(version as i32),
        prev_blockhash: job.prevhash,
        merkle_root: merkle_root(&job.coinbase(extranonce1, extranonce2), &job.merkle_branch),
        time: ntime,
        bits: CompactTarget::from_consensus(job.nbits),
        nonce,
    }
}

/// A header's 80 consensus bytes.
pub fn header_bytes(header: &Header) -> [u8; 80] {
    let mut out = [0u8; 80];
    out[0..4].copy_from_slice(&header.version.to_consensus().to_le_bytes());
    out[4..36].copy_from_slice(header.prev_blockhash.as_byte_array());
    out[36..68].copy_from_slice(header.merkle_root.as_byte_array());
    out[68..72].copy_from_slice(&header.time.to_le_bytes());
    out[72..76].copy_from_slice(&header.bits.to_consensus().to_le_bytes());
    out[76..80].copy_from_slice(&header.nonce.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const GENESIS_COINBASE: &str = "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff4d04ffff001d0104455468652054696d65732030332f4a616e2f32303039204368616e63656c6c6f72206f6e206272696e6b206f66207365636f6e64206261696c6f757420666f722062616e6b73ffffffff0100f2052a01000000434104678afdb0fe5548271967f1a67130b7105cd6a828e03909a67962e0ea1f61deb649f6bc3f4cef38c4f35504e51ec112de5c384df7ba0b8d578a4c702b6bf11d5fac00000000";
    const GENESIS_HASH: &str = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f";

    #[test]
    fn prevhash_quirk_roundtrip() {
        // Block 1's notify would carry the genesis hash in stratum form.
        let stratum = "0a8ce26f72b3f1b646a2a6c14ff763ae65831e939c085ae10019d66800000000";
        let h = decode_prevhash(stratum).unwrap();
        assert_eq!(h.to_string(), GENESIS_HASH);
        assert_eq!(encode_prevhash(&h), stratum);
        assert!(decode_prevhash("00").is_err());
        assert!(decode_prevhash("zz").is_err());
    }

    #[test]
    fn genesis_header_from_notify_fields() {
        // Split the genesis coinbase into coinb1 / en1 / en2 / coinb2 around its scriptSig text.
        let cb = hex::decode(GENESIS_COINBASE).unwrap();
        let (coinb1, rest) = cb.split_at(60);
        let (en1, rest) = rest.split_at(4);
        let (en2, coinb2) = rest.split_at(8);
        let params = json!([
            "genesis",
            "0000000000000000000000000000000000000000000000000000000000000000",
            hex::encode(coinb1),
            hex::encode(coinb2),
            [],
            "00000001",
            "1d00ffff",
            "495fab29",
            true
        ]);
        let job = Job::from_notify_params(&params).unwrap();
        assert_eq!(job.version, 1);
        assert_eq!(job.nbits, 0x1d00ffff);
        assert_eq!(job.ntime, 1231006505);
        assert!(job.clean);
        let header = build_header(&job, en1, en2, job.version, job.ntime, 2083236893);
        assert_eq!(
            header.merkle_root.to_string(),
            "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"
        );
        assert_eq!(header.block_hash().to_string(), GENESIS_HASH);
        let bytes = header_bytes(&header);
        assert_eq!(bitcoin::consensus::serialize(&header), bytes.to_vec());
        assert_eq!(
            BlockHash::from_byte_array(sha256d::Hash::hash(&bytes).to_byte_array()),
            header.block_hash()
        );
        assert!(header.target().is_met_by(header.block_hash()));
    }

    #[test]
    fn merkle_branch_folds_left() {
        let cb = b"coinbase".to_vec();
        let b1 = [1u8; 32];
        let b2 = [2u8; 32];
        let txid = sha256d::Hash::hash(&cb).to_byte_array();
        let step1 = sha256d::Hash::hash(&[txid, b1].concat()).to_byte_array();
        let step2 = sha256d::Hash::hash(&[step1, b2].concat()).to_byte_array();
        assert_eq!(merkle_root(&cb, &[b1, b2]).to_byte_array(), step2);
        assert_eq!(merkle_root(&cb, &[]).to_byte_array(), txid);
    }

    #[test]
    fn notify_parsing_rejects_garbage_and_tolerates_quirks() {
        assert!(Job::from_notify_params(&json!([])).is_err());
        assert!(Job::from_notify_params(&json!({})).is_err());
        let mut p = json!([
            "1",
            "00".repeat(32),
            "ab",
            "cd",
            ["11".repeat(32)],
            "20000000",
            "1d00ffff",
            "5",
            false
        ]);
        let job = Job::from_notify_params(&p).unwrap();
        assert_eq!(job.ntime, 5);
        assert_eq!(job.merkle_branch, vec![[0x11; 32]]);
        assert!(!job.clean);
        p[4] = json!(["11"]);
        assert!(Job::from_notify_params(&p).is_err());
        p[4] = json!([]);
        p[5] = json!("123456789");
        assert!(Job::from_notify_params(&p).is_err());
    }

    #[test]
    fn version_rolling() {
        assert_eq!(
            roll_version(0x2000_0000, 0x1fff_e000, 0xffff_ffff),
            0x3fff_e000
        );
        assert_eq!(
            roll_version(0x2000_0004, 0x1fff_e000, 0x0000_2000),
            0x2000_2004
        );
        assert_eq!(roll_version(0x2000_0000, 0, 0xffff_ffff), 0x2000_0000);
    }
}
