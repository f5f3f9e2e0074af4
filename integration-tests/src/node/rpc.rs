//! The node's JSON-RPC interface, and the chain queries the tests make through it.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bitcoin::{Address, Block, BlockHash};
use serde_json::{json, Value};

use super::BitcoinNode;

/// An error object returned by the node's JSON-RPC server (as opposed to a transport failure).
///
/// [`BitcoinNode::rpc`] returns it inside `anyhow::Error`; get it back with `err.downcast_ref::<RpcError>()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcError {
    pub method: String,
    pub code: i64,
    pub message: String,
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RPC {} failed: {} (code {})",
            self.method, self.message, self.code
        )
    }
}

impl std::error::Error for RpcError {}

impl BitcoinNode {
    /// Calls a JSON-RPC method with cookie auth. `params` is an array (or object for named params);
    /// `Value::Null` means no parameters. An error object from the node becomes an [`RpcError`].
    pub async fn rpc(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.rpc_with_timeout(method, params, None).await
    }

    /// [`BitcoinNode::rpc`], deserializing the result.
    pub async fn rpc_as<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        params: Value,
    ) -> anyhow::Result<T> {
        let v = self.rpc(method, params).await?;
        serde_json::from_value(v).with_context(|| format!("decoding the result of {method}"))
    }

    /// [`BitcoinNode::rpc`] with an optional whole-request timeout.
    pub async fn rpc_with_timeout(
        &self,
        method: &str,
        params: Value,
        timeout: Option<Duration>,
    ) -> anyhow::Result<Value> {
        let params = if params.is_null() { json!([]) } else { params };
        let (user, pass) = self.rpc_credentials()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({ "jsonrpc": "1.0", "id": id, "method": method, "params": params });
        let mut req = self
            .http
            .post(self.rpc_url())
            .basic_auth(user, Some(pass))
            .json(&body);
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("RPC {method}: sending request"))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .with_context(|| format!("RPC {method}: reading response"))?;
        // Bitcoin Core answers errors with HTTP 4xx/5xx *and* a JSON body, so look at the body first.
        let Ok(reply) = serde_json::from_str::<Value>(&text) else {
            bail!("RPC {method}: HTTP {status}: {}", text.trim());
        };
        match reply.get("error") {
            Some(err) if !err.is_null() => Err(RpcError {
                method: method.to_string(),
                code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: err
                    .get("message")
                    .and_then(Value::as_str)
                    .map_or_else(|| err.to_string(), str::to_string),
            }
            .into()),
            _ if !status.is_success() => bail!("RPC {method}: HTTP {status}: {}", text.trim()),
            _ => Ok(reply.get("result").cloned().unwrap_or(Value::Null)),
        }
    }

    /// `generatetoaddress n address`: mines `n` blocks paying the coinbase to `address`.
    pub async fn mine_to(&self, n: u64, address: &Address) -> anyhow::Result<Vec<BlockHash>> {
        let hashes: Vec<String> = self
            .rpc_as("generatetoaddress", json!([n, address.to_string()]))
            .await?;
        hashes
            .iter()
            .map(|h| BlockHash::from_str(h).with_context(|| format!("bad block hash {h}")))
            .collect()
    }

    /// Height and hash of the active chain tip.
    pub async fn tip(&self) -> anyhow::Result<(u64, BlockHash)> {
        let info = self.rpc("getblockchaininfo", json!([])).await?;
        let height = info["blocks"]
            .as_u64()
            .ok_or_else(|| anyhow!("getblockchaininfo: no blocks field"))?;
        let hash = info["bestblockhash"]
            .as_str()
            .ok_or_else(|| anyhow!("getblockchaininfo: no bestblockhash"))?;
        Ok((height, BlockHash::from_str(hash)?))
    }

    /// The full block (`getblock <hash> 0`, consensus-decoded).
    pub async fn block(&self, hash: &BlockHash) -> anyhow::Result<Block> {
        let hex: String = self
            .rpc_as("getblock", json!([hash.to_string(), 0]))
            .await?;
        bitcoin::consensus::encode::deserialize_hex(&hex)
            .with_context(|| format!("decoding block {hash}"))
    }

    /// Waits until the tip height is at least `h`.
    pub async fn wait_for_height(&self, h: u64, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let height: u64 = self.rpc_as("getblockcount", json!([])).await?;
            if height >= h {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("node still at height {height} after {timeout:?}, wanted {h}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
