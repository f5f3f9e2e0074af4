//! The merkle branch that links a block's coinbase to its merkle root.

use bitcoin::hashes::{sha256d, Hash, HashEngine};
use bitcoin::{TxMerkleNode, Txid};

/// Hashes two merkle nodes into their parent.
pub fn parent(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut engine = sha256d::Hash::engine();
    engine.input(left);
    engine.input(right);
    sha256d::Hash::from_engine(engine).to_byte_array()
}

/// The branch for position 0 (the coinbase) given the other transactions' txids in block order.
///
/// The coinbase is unknown until a miner fills its extranonce, so only its siblings are kept:
/// one per level, `log2(n)` hashes in all.
pub fn coinbase_path(txids: impl Iterator<Item = Txid>) -> Vec<TxMerkleNode> {
    // Level slots: index 0 stands for the (unknown) node on the coinbase's own path.
    let mut level: Vec<[u8; 32]> = std::iter::once([0u8; 32])
        .chain(txids.map(Hash::to_byte_array))
        .collect();
    let mut path = Vec::new();
    while level.len() > 1 {
        path.push(TxMerkleNode::from_byte_array(level[1]));
        let mut next = Vec::with_capacity(level.len() / 2 + 1);
        next.push([0u8; 32]);
        for pair in level[2..].chunks(2) {
            let right = pair.get(1).unwrap_or(&pair[0]);
            next.push(parent(&pair[0], right));
        }
        level = next;
    }
    path
}

/// Folds a coinbase txid up its branch into the merkle root.
pub fn root_from_path(coinbase: Txid, path: &[TxMerkleNode]) -> TxMerkleNode {
    let mut node = coinbase.to_byte_array();
    for sibling in path {
        node = parent(&node, sibling.as_byte_array());
    }
    TxMerkleNode::from_byte_array(node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::merkle_tree::calculate_root;

    fn txid(n: u8) -> Txid {
        Txid::from_byte_array([n; 32])
    }

    #[test]
    fn path_matches_full_merkle_root_for_every_size() {
        for n in 1..=17u8 {
            let all: Vec<Txid> = (0..n).map(txid).collect();
            let expected: TxMerkleNode = calculate_root(
                all.iter()
                    .map(|t| TxMerkleNode::from_byte_array(t.to_byte_array())),
            )
            .expect("non-empty");
            let path = coinbase_path(all[1..].iter().copied());
            assert_eq!(root_from_path(all[0], &path), expected, "{n} transactions");
        }
    }

    #[test]
    fn lone_coinbase_has_empty_path() {
        assert!(coinbase_path(std::iter::empty()).is_empty());
        assert_eq!(root_from_path(txid(7), &[]).to_byte_array(), [7; 32]);
    }
}
