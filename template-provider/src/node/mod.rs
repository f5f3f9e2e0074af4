//! Node backends: how templates and tips come in and how blocks go out.

pub mod gbt;
pub mod ipc;
pub mod rpc;
pub mod zmq;

use bitcoin::Network;

/// The chain name Bitcoin Core reports in `getblockchaininfo` for a network.
pub fn core_chain_name(network: Network) -> &'static str {
    match network {
        Network::Bitcoin => "main",
        Network::Testnet => "test",
        Network::Testnet4 => "testnet4",
        Network::Signet => "signet",
        Network::Regtest => "regtest",
    }
}

/// Blocks between subsidy halvings; regtest halves far sooner than the other chains.
pub fn halving_interval(network: Network) -> u32 {
    match network {
        Network::Regtest => 150,
        _ => 210_000,
    }
}

/// The block subsidy at `height` on `network`.
pub fn block_subsidy(network: Network, height: u32) -> bitcoin::Amount {
    let halvings = height / halving_interval(network);
    if halvings >= 64 {
        return bitcoin::Amount::ZERO;
    }
    bitcoin::Amount::from_sat((50 * 100_000_000u64) >> halvings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsidy_halves() {
        assert_eq!(block_subsidy(Network::Bitcoin, 0).to_sat(), 5_000_000_000);
        assert_eq!(
            block_subsidy(Network::Bitcoin, 840_000).to_sat(),
            312_500_000
        );
        assert_eq!(block_subsidy(Network::Regtest, 150).to_sat(), 2_500_000_000);
        assert_eq!(block_subsidy(Network::Regtest, 150 * 64).to_sat(), 0);
    }
}
