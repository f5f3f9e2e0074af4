//! Bitcoin Core / Knots JSON-RPC client.
//!
//! Any node version that serves `getblocktemplate` works. Authentication is a cookie file (re-read
//! when the node restarts and rotates it) or a user and password.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{json, Value};

/// How the client proves itself to the node.
#[derive(Debug, Clone)]
pub enum NodeAuth {
    /// The `.cookie` file in the node's data directory; read at each (re)connect.
    CookieFile(PathBuf),
    /// `rpcuser`/`rpcpassword` (or an `rpcauth` entry).
    UserPass { user: String, password: String },
}

/// What went wrong talking to the node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// The node could not be reached, or the connection broke.
    #[error("cannot reach the node at {url}: {source}")]
    Transport { url: String, source: reqwest::Error },
    /// The request was not answered within its timeout.
    #[error("the node at {url} did not answer {method} within {timeout:?}")]
    Timeout {
        url: String,
        method: String,
        timeout: Duration,
    },
    /// The cookie file could not be read.
    #[error("cannot read the node's cookie file {path}: {source}")]
    Cookie {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The node refused our credentials.
    #[error("the node refused the RPC credentials (HTTP 401); check cookie_file or rpc_user/rpc_password")]
    Unauthorized,
    /// The node answered with a JSON-RPC error.
    #[error("the node answered {method} with error {code}: {message}")]
    Node {
        method: String,
        code: i64,
        message: String,
    },
    /// The node's answer was not what the method promises.
    #[error("unexpected answer to {method}: {detail}")]
    BadReply { method: String, detail: String },
}

impl RpcError {
    /// The JSON-RPC error code, when the node itself refused the call.
    pub fn node_code(&self) -> Option<i64> {
        match self {
            RpcError::Node { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// `RPC_METHOD_NOT_FOUND` in Bitcoin Core.
pub const RPC_METHOD_NOT_FOUND: i64 = -32601;
/// `RPC_IN_WARMUP`: the node is still starting.
pub const RPC_IN_WARMUP: i64 = -28;

/// A cheap-to-clone JSON-RPC client.
#[derive(Debug, Clone)]
pub struct RpcClient {
    http: reqwest::Client,
    url: String,
    auth: NodeAuth,
    ids: std::sync::Arc<AtomicU64>,
    timeout: Duration,
}

impl RpcClient {
    /// Builds a client; nothing is sent until the first call.
    pub fn new(url: impl Into<String>, auth: NodeAuth) -> Self {
        let http = reqwest::Client::builder()
            // One long poll and a few short calls at a time; keep connections for reuse.
            .pool_max_idle_per_host(4)
            .tcp_nodelay(true)
            .build()
            .expect("a reqwest client without TLS builds with any settings used here");
        RpcClient {
            http,
            url: url.into(),
            auth,
            ids: Default::default(),
            timeout: Duration::from_secs(30),
        }
    }

    /// The node's RPC URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn credentials(&self) -> Result<(String, String), RpcError> {
        match &self.auth {
            NodeAuth::UserPass { user, password } => Ok((user.clone(), password.clone())),
            NodeAuth::CookieFile(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| RpcError::Cookie {
                    path: path.clone(),
                    source,
                })?;
                let text = text.trim();
                let (user, pass) = text.split_once(':').ok_or_else(|| RpcError::Cookie {
                    path: path.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "no ':' in cookie",
                    ),
                })?;
                Ok((user.to_owned(), pass.to_owned()))
            }
        }
    }

    /// Calls `method` and decodes its result.
    ///
    /// # Errors
    /// Transport failures, the node's own errors and undecodable results, each as its own
    /// [`RpcError`] variant.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        params: Value,
    ) -> Result<T, RpcError> {
        self.call_with_timeout(method, params, self.timeout).await
    }

    /// Like [`call`](Self::call) with an explicit timeout, for long polls.
    pub async fn call_with_timeout<T: DeserializeOwned>(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<T, RpcError> {
        let raw = self.call_raw(method, params, timeout).await?;
        serde_json::from_value(raw).map_err(|e| RpcError::BadReply {
            method: method.to_owned(),
            detail: e.to_string(),
        })
    }

    async fn call_raw(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, RpcError> {
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "1.0", "id": id, "method": method, "params": params});
        let (user, pass) = self.credentials()?;
        let send = self
            .http
            .post(&self.url)
            .basic_auth(user, Some(pass))
            .json(&body)
            .timeout(timeout)
            .send();
        let response = send
            .await
            .map_err(|source| self.transport_error(method, timeout, source))?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(RpcError::Unauthorized);
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|source| self.transport_error(method, timeout, source))?;
        let reply: Value = serde_json::from_slice(&bytes).map_err(|e| RpcError::BadReply {
            method: method.to_owned(),
            detail: format!("HTTP {status}, body is not JSON ({e})"),
        })?;
        if let Some(err) = reply.get("error").filter(|e| !e.is_null()) {
            return Err(RpcError::Node {
                method: method.to_owned(),
                code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: err
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
            });
        }
        match reply {
            Value::Object(mut map) => Ok(map.remove("result").unwrap_or(Value::Null)),
            other => Err(RpcError::BadReply {
                method: method.to_owned(),
                detail: format!("not a JSON-RPC reply object: {other}"),
            }),
        }
    }

    fn transport_error(&self, method: &str, timeout: Duration, source: reqwest::Error) -> RpcError {
        if source.is_timeout() {
            RpcError::Timeout {
                url: self.url.clone(),
                method: method.to_owned(),
                timeout,
            }
        } else {
            RpcError::Transport {
                url: self.url.clone(),
                source,
            }
        }
    }

    /// `submitblock`: `None` when the node accepted the block, else its reason
    /// (`"duplicate"`, `"inconclusive"`, `"bad-txnmrklroot"`, ...).
    ///
    /// # Errors
    /// Only when the node could not be asked; a refused block is `Ok(Some(reason))`.
    pub async fn submit_block(&self, block_hex: &str) -> Result<Option<String>, RpcError> {
        let verdict: Value = self.call("submitblock", json!([block_hex])).await?;
        Ok(match verdict {
            Value::Null => None,
            Value::String(s) => Some(s),
            other => Some(other.to_string()),
        })
    }
}
