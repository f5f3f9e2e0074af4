//! Blocks built by hand from a template, as a miner that solved it would.

use bitcoin::block::Header;
use bitcoin::{BlockHash, ScriptBuf, Txid};
use mining_types::{merkle, CoinbaseConfig, CoinbaseSplit, Solution, Template};

/// The extranonce every hand-built coinbase carries.
const EXTRANONCE: [u8; 8] = [0u8; 8];

/// The template's transaction ids, in block order.
pub fn txids(t: &Template) -> Vec<Txid> {
    t.txs.iter().map(|x| x.txid).collect()
}

/// The whole block for `t`, paying `payout` with `tag` in the coinbase, with `nonce` (its proof
/// of work unchecked).
///
/// # Errors
/// A coinbase that cannot be built on `t`.
pub fn build_block(
    t: &Template,
    payout: &ScriptBuf,
    tag: &[u8],
    nonce: u32,
) -> anyhow::Result<Vec<u8>> {
    let (header, coinbase) = header_and_coinbase(t, payout, tag, nonce)?;
    assemble(t, &header, &coinbase)
}

/// [`build_block`] with the first nonce that meets the network target (regtest: a few tries),
/// and the block's hash.
///
/// # Errors
/// A coinbase that cannot be built on `t`, or no nonce meets the target.
pub fn mine_block(
    t: &Template,
    payout: &ScriptBuf,
    tag: &[u8],
) -> anyhow::Result<(BlockHash, Vec<u8>)> {
    let (mut header, coinbase) = header_and_coinbase(t, payout, tag, 0)?;
    let target = t.network_target();
    while header.validate_pow(target).is_err() {
        header.nonce = header
            .nonce
            .checked_add(1)
            .ok_or_else(|| anyhow::anyhow!("no nonce meets the target"))?;
    }
    Ok((header.block_hash(), assemble(t, &header, &coinbase)?))
}

fn header_and_coinbase(
    t: &Template,
    payout: &ScriptBuf,
    tag: &[u8],
    nonce: u32,
) -> anyhow::Result<(Header, CoinbaseSplit)> {
    let config = CoinbaseConfig {
        payout_script: payout.clone(),
        tag: tag.to_vec(),
    };
    let coinbase = CoinbaseSplit::build(t, &config, EXTRANONCE.len())?;
    let header = Header {
        version: t.version,
        prev_blockhash: t.prev_hash,
        merkle_root: merkle::root_from_path(coinbase.txid(&[&EXTRANONCE]), &t.merkle_path),
        time: t.cur_time,
        bits: t.bits,
        nonce,
    };
    Ok((header, coinbase))
}

fn assemble(t: &Template, header: &Header, coinbase: &CoinbaseSplit) -> anyhow::Result<Vec<u8>> {
    let solution = Solution::from_split(t.id, header, coinbase, &EXTRANONCE);
    Ok(solution.assemble(t)?.bytes)
}
