//! Bitcoin Core / Knots JSON-RPC client.
//!
//! Any node version that serves `getblocktemplate` works. Authentication is a cookie file (re-read
//! when the node restarts and rotates it) or a user and password.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

/// How the client proves itself to the node.
#[derive(Debug, Clone)]
pub enum NodeAuth {
    /// The `.cookie` file in the node's data directory; read at each (re)connect.
    CookieFile(PathBuf),
    /// `rpcuser`/`rpcpassword` (or an `rpcauth` entry).
    UserPass {
        /// The RPC user name.
        user: String,
        /// Its password.
        password: String,
    },
}

/// What went wrong talking to the node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// The node could not be reached, or the connection broke.
    #[error("cannot reach the node at {url}: {source}")]
    Transport {
        /// The node's RPC URL.
        url: String,
        /// What the HTTP client reported.
        source: reqwest::Error,
    },
    /// The request was not answered within its timeout.
    #[error("the node at {url} did not answer {method} within {timeout:?}")]
    Timeout {
        /// The node's RPC URL.
        url: String,
        /// The method called.
        method: String,
        /// How long the call was given.
        timeout: Duration,
    },
    /// The cookie file could not be read.
    #[error("cannot read the node's cookie file {path}: {source}")]
    Cookie {
        /// The cookie file's path.
        path: PathBuf,
        /// Why it could not be read, or that it holds no `user:password`.
        source: std::io::Error,
    },
    /// The node refused our credentials.
    #[error("the node refused the RPC credentials (HTTP 401); check cookie_file or rpc_user/rpc_password")]
    Unauthorized,
    /// The node answered with a JSON-RPC error.
    #[error("the node answered {method} with error {code}: {message}")]
    Node {
        /// The method called.
        method: String,
        /// The JSON-RPC error code (Bitcoin Core's `RPC_*` values).
        code: i64,
        /// The node's message.
        message: String,
    },
    /// The node's answer was not what the method promises.
    #[error("unexpected answer to {method}: {detail}")]
    BadReply {
        /// The method called.
        method: String,
        /// What was wrong with the answer.
        detail: String,
    },
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
    /// The cookie as last read: reading it for every call would need a file descriptor just
    /// when a block must go out of a process that has none to spare. Read again on a 401 (the
    /// node writes a new cookie at each start).
    cookie: std::sync::Arc<std::sync::Mutex<Option<(String, String)>>>,
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
            cookie: Default::default(),
        }
    }

    /// The node's RPC URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn credentials(&self, fresh: bool) -> Result<(String, String), RpcError> {
        let path = match &self.auth {
            NodeAuth::UserPass { user, password } => return Ok((user.clone(), password.clone())),
            NodeAuth::CookieFile(path) => path,
        };
        let mut cached = self
            .cookie
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let (false, Some(c)) = (fresh, cached.as_ref()) {
            return Ok(c.clone());
        }
        let text = std::fs::read_to_string(path).map_err(|source| RpcError::Cookie {
            path: path.clone(),
            source,
        })?;
        let (user, pass) = text
            .trim()
            .split_once(':')
            .ok_or_else(|| RpcError::Cookie {
                path: path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, "no ':' in cookie"),
            })?;
        let c = (user.to_owned(), pass.to_owned());
        *cached = Some(c.clone());
        Ok(c)
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
    ///
    /// # Errors
    /// As [`call`](Self::call); a call not answered within `timeout` is [`RpcError::Timeout`].
    pub async fn call_with_timeout<T: DeserializeOwned>(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<T, RpcError> {
        self.call_raw(method, params, timeout).await?.decode()
    }

    /// Sends `method` and returns the node's reply undecoded, so a large one (a full
    /// `getblocktemplate`) can be decoded off the async runtime with [`RawReply::decode`].
    ///
    /// # Errors
    /// Transport failures, a timeout and refused credentials; the reply itself is not looked at.
    pub async fn call_raw(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<RawReply, RpcError> {
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "1.0", "id": id, "method": method, "params": params});
        let mut fresh = false;
        let response = loop {
            let (user, pass) = self.credentials(fresh)?;
            let response = self
                .http
                .post(&self.url)
                .basic_auth(user, Some(pass))
                .json(&body)
                .timeout(timeout)
                .send()
                .await
                .map_err(|source| self.transport_error(method, timeout, source))?;
            if response.status() != reqwest::StatusCode::UNAUTHORIZED {
                break response;
            }
            if fresh || matches!(self.auth, NodeAuth::UserPass { .. }) {
                return Err(RpcError::Unauthorized);
            }
            // The node restarted with a new cookie.
            fresh = true;
        };
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|source| self.transport_error(method, timeout, source))?;
        Ok(RawReply {
            method: method.to_owned(),
            status: status.as_u16(),
            body,
        })
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

/// A node's JSON-RPC reply as it came off the wire, not yet decoded.
#[derive(Debug, Clone)]
pub struct RawReply {
    method: String,
    status: u16,
    body: bytes::Bytes,
}

/// The JSON-RPC envelope, typed: `result` goes straight into `T`, with no `Value` tree in
/// between (a full template is megabytes of it).
#[derive(Deserialize)]
struct Envelope<T> {
    // `null` (a call that returns nothing, or an error reply) is `None`.
    #[serde(default = "Option::default")]
    result: Option<T>,
    #[serde(default)]
    error: Option<NodeErrorObject>,
}

#[derive(Deserialize)]
struct NodeErrorObject {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
}

impl RawReply {
    /// A reply to `method` with this HTTP status and body (what [`RpcClient::call_raw`] returns;
    /// public for benchmarks and tests).
    pub fn new(method: impl Into<String>, status: u16, body: bytes::Bytes) -> Self {
        RawReply {
            method: method.into(),
            status,
            body,
        }
    }

    /// The method this replies to.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The body's size in bytes.
    pub fn len(&self) -> usize {
        self.body.len()
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.body.is_empty()
    }

    /// Decodes the reply: the node's error, or `result` as a `T`, in one pass over the bytes.
    ///
    /// # Errors
    /// [`RpcError::Node`] when the node answered with an error, [`RpcError::BadReply`] when the
    /// body is not a JSON-RPC reply or its `result` is not a `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, RpcError> {
        match serde_json::from_slice::<Envelope<T>>(&self.body) {
            Ok(Envelope {
                error: Some(err), ..
            }) => Err(RpcError::Node {
                method: self.method.clone(),
                code: err.code,
                message: err.message,
            }),
            Ok(Envelope {
                result: Some(result),
                ..
            }) => Ok(result),
            // `null`: whatever `T` makes of it (`Value::Null`, `()`, `None`), or an error.
            Ok(Envelope { result: None, .. }) => {
                T::deserialize(serde_json::Value::Null).map_err(|e| self.bad_reply(e.to_string()))
            }
            Err(typed) => Err(self.diagnose(&typed)),
        }
    }

    /// Why a body did not decode, as precisely as a second, untyped look can tell (only on the
    /// failure path).
    fn diagnose(&self, typed: &serde_json::Error) -> RpcError {
        let status = self.status;
        let reply: Value = match serde_json::from_slice(&self.body) {
            Ok(v) => v,
            Err(e) => return self.bad_reply(format!("HTTP {status}, body is not JSON ({e})")),
        };
        if let Some(err) = reply.get("error").filter(|e| !e.is_null()) {
            return RpcError::Node {
                method: self.method.clone(),
                code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: err
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
            };
        }
        if !reply.is_object() {
            return self.bad_reply(format!("not a JSON-RPC reply object: {reply}"));
        }
        self.bad_reply(typed.to_string())
    }

    fn bad_reply(&self, detail: String) -> RpcError {
        RpcError::BadReply {
            method: self.method.clone(),
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(body: &str) -> RawReply {
        RawReply::new("m", 200, bytes::Bytes::copy_from_slice(body.as_bytes()))
    }

    #[test]
    fn decodes_result_error_and_null() {
        let n: u32 = reply(r#"{"result":7,"error":null,"id":1}"#)
            .decode()
            .unwrap();
        assert_eq!(n, 7);
        let v: Value = reply(r#"{"result":null,"error":null,"id":1}"#)
            .decode()
            .unwrap();
        assert!(v.is_null());
        let o: Option<String> = reply(r#"{"result":"inconclusive","error":null,"id":1}"#)
            .decode()
            .unwrap();
        assert_eq!(o.as_deref(), Some("inconclusive"));
        let err = reply(r#"{"result":null,"error":{"code":-8,"message":"bad"},"id":1}"#)
            .decode::<u32>()
            .unwrap_err();
        assert_eq!(err.node_code(), Some(-8));
        // The node's error wins even when a typed decode of the rest would fail.
        let err = reply(r#"{"result":{"x":1},"error":{"code":-1,"message":"m"},"id":1}"#)
            .decode::<u32>()
            .unwrap_err();
        assert_eq!(err.node_code(), Some(-1));
    }

    #[test]
    fn bad_bodies_are_bad_replies() {
        for body in ["<html>", "[1,2]", r#"{"result":"x","error":null}"#] {
            let err = reply(body).decode::<u32>().unwrap_err();
            assert!(matches!(err, RpcError::BadReply { .. }), "{body}: {err}");
        }
        let err = reply(r#"{"result":null,"error":null}"#)
            .decode::<u32>()
            .unwrap_err();
        assert!(matches!(err, RpcError::BadReply { .. }));
    }
}
