//! One JDS connection: `AllocateMiningJobToken`, `DeclareMiningJob` (answering
//! `ProvideMissingTransactions` from the template) and `PushSolution`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use binary_sv2::{Seq064K, Str0255, B016M, B0255, B064K, U256};
use bitcoin::hashes::Hash;
use bitcoin::TxOut;
use common_messages_sv2::Protocol;
use job_declaration_sv2::{
    AllocateMiningJobToken, AllocateMiningJobTokenSuccess, DeclareMiningJob, DeclareMiningJobError,
    DeclareMiningJobSuccess, ProvideMissingTransactions, ProvideMissingTransactionsSuccess,
    PushSolution, MESSAGE_TYPE_ALLOCATE_MINING_JOB_TOKEN,
    MESSAGE_TYPE_ALLOCATE_MINING_JOB_TOKEN_SUCCESS, MESSAGE_TYPE_DECLARE_MINING_JOB,
    MESSAGE_TYPE_DECLARE_MINING_JOB_ERROR, MESSAGE_TYPE_DECLARE_MINING_JOB_SUCCESS,
    MESSAGE_TYPE_PROVIDE_MISSING_TRANSACTIONS, MESSAGE_TYPE_PROVIDE_MISSING_TRANSACTIONS_SUCCESS,
    MESSAGE_TYPE_PUSH_SOLUTION,
};
use mining_types::{Side, Solution, Template};
use sv2_wire::{AuthorityPublicKey, Frame, Frames, NoiseWriter, Sv2Error};
use tokio::sync::Mutex;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};

use crate::{Declarable, Tally};

/// `SetupConnection` flag: the declaration carries the transaction list (full-template mode).
pub const DECLARE_TX_DATA: u32 = 0x1;

/// What went wrong with the JDS. Always the JDS's side: see [`JdError::side`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JdError {
    /// The connection failed or broke.
    #[error("job declarator: {0}")]
    Wire(#[from] Sv2Error),
    /// The JDS refused a declaration.
    #[error("job declarator refused the declaration: {code}")]
    Refused {
        /// Its error code.
        code: String,
    },
    /// No answer in time.
    #[error("job declarator did not answer {what} within {timeout:?}")]
    Timeout {
        /// The request.
        what: &'static str,
        /// How long we waited.
        timeout: Duration,
    },
    /// The JDS said something that makes no sense here.
    #[error("job declarator sent {0}")]
    Protocol(String),
}

impl JdError {
    /// The JDS, whatever the failure: failover and logs name it so.
    pub fn side(&self) -> Side {
        Side::Jds
    }
}

/// A mining job token, as opaque bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Vec<u8>);

impl Token {
    /// Wraps the JDS's bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Token(bytes)
    }

    /// The bytes, as `SetCustomMiningJob` carries them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Token({})",
            bitcoin::hex::DisplayHex::to_lower_hex_string(&self.0[..])
        )
    }
}

/// A fresh token and the outputs the pool wants in the coinbase.
#[derive(Debug, Clone)]
pub struct Allocation {
    /// The token.
    pub token: Token,
    /// The pool's coinbase outputs; a zero value is filled with what the block leaves.
    pub coinbase_outputs: Vec<TxOut>,
}

/// One JDS connection.
#[derive(Debug)]
pub struct JdClient {
    address: String,
    frames: Frames,
    /// Shared with [`SolutionPusher`]s: a solution never waits for a declaration's answer.
    writer: Arc<Mutex<NoiseWriter>>,
    timeout: Duration,
    next_request: u32,
    /// Where declarations and answers are counted, if anywhere.
    tally: Option<Arc<Tally>>,
}

/// Sends `PushSolution` on a JDS connection while its [`JdClient`] may be waiting for an answer.
#[derive(Debug, Clone)]
pub struct SolutionPusher {
    writer: Arc<Mutex<NoiseWriter>>,
}

impl SolutionPusher {
    /// Tells the JDS about a block found on a declared job: `solution` on `template`, with
    /// `extranonce` the whole extranonce (the channel's prefix included).
    ///
    /// # Errors
    /// A lost connection.
    pub async fn push(
        &self,
        solution: &Solution,
        template: &Template,
        extranonce: &[u8],
    ) -> Result<(), JdError> {
        let prev = template.prev_hash.to_byte_array();
        let msg = PushSolution {
            extranonce: binary_sv2::B032::try_from(extranonce)
                .map_err(|_| JdError::Protocol("extranonce above 32 bytes".into()))?,
            prev_hash: U256::from(&prev),
            nonce: solution.nonce,
            ntime: solution.ntime,
            nbits: template.bits.to_consensus(),
            version: solution.version.to_consensus() as u32,
        };
        self.writer
            .lock()
            .await
            .send(msg, MESSAGE_TYPE_PUSH_SOLUTION, false)
            .await?;
        Ok(())
    }
}

fn decode<'a, T: binary_sv2::Deserialize<'a>>(frame: &'a mut Frame) -> Result<T, JdError> {
    frame.decode().map_err(JdError::from)
}

impl JdClient {
    /// Connects (pinning `authority`; `connect_timeout` for TCP, handshake and setup, `timeout`
    /// for every answer after that) and sets up declaration: full-template mode when
    /// `declare_tx_data`, coinbase-only mode otherwise (tokens only; the pool never sees the
    /// transactions). The connection's reader runs on `tracker`.
    ///
    /// # Errors
    /// Unreachable, wrong key, or a refused setup (a JDS that supports only the other mode
    /// refuses here, with its reason).
    pub async fn connect(
        address: &str,
        authority: AuthorityPublicKey,
        declare_tx_data: bool,
        (connect_timeout, timeout): (Duration, Duration),
        tracker: &TaskTracker,
    ) -> Result<JdClient, JdError> {
        let flags = if declare_tx_data { DECLARE_TX_DATA } else { 0 };
        let conn = sv2_wire::open(
            address,
            authority,
            Protocol::JobDeclarationProtocol,
            flags,
            connect_timeout,
            tracker,
        )
        .await?;
        info!(%address, "job declarator connected");
        Ok(JdClient {
            address: address.to_owned(),
            frames: conn.frames,
            writer: Arc::new(Mutex::new(conn.writer)),
            timeout,
            next_request: 1,
            tally: None,
        })
    }

    /// Counts every declaration and the JDS's answer into `tally`.
    pub fn count_into(&mut self, tally: Arc<Tally>) {
        self.tally = Some(tally);
    }

    /// The JDS's address.
    pub fn address(&self) -> &str {
        &self.address
    }

    fn request_id(&mut self) -> u32 {
        let id = self.next_request;
        self.next_request = self.next_request.wrapping_add(1).max(1);
        id
    }

    /// What sends solutions on this connection.
    pub fn pusher(&self) -> SolutionPusher {
        SolutionPusher {
            writer: self.writer.clone(),
        }
    }

    async fn send<T: binary_sv2::Serialize + binary_sv2::GetSize>(
        &self,
        message: T,
        msg_type: u8,
    ) -> Result<(), JdError> {
        self.writer
            .lock()
            .await
            .send(message, msg_type, false)
            .await?;
        Ok(())
    }

    async fn recv(&mut self, what: &'static str) -> Result<Frame, JdError> {
        self.frames
            .recv_timeout(self.timeout)
            .await
            .map_err(|e| match e {
                Sv2Error::Timeout(timeout) => JdError::Timeout { what, timeout },
                other => JdError::Wire(other),
            })
    }

    /// Asks for a token.
    ///
    /// # Errors
    /// No answer in time, a lost connection, or an answer that does not decode.
    pub async fn allocate(&mut self, user: &str) -> Result<Allocation, JdError> {
        let request_id = self.request_id();
        let msg = AllocateMiningJobToken {
            user_identifier: Str0255::try_from(user.as_bytes())
                .map_err(|_| JdError::Protocol("user identity above 255 bytes".into()))?,
            request_id,
        };
        self.send(msg, MESSAGE_TYPE_ALLOCATE_MINING_JOB_TOKEN)
            .await?;
        loop {
            let mut frame = self.recv("AllocateMiningJobToken").await?;
            if frame.msg_type != MESSAGE_TYPE_ALLOCATE_MINING_JOB_TOKEN_SUCCESS {
                debug!(
                    msg_type = frame.msg_type,
                    "ignored while waiting for a token"
                );
                continue;
            }
            let ok: AllocateMiningJobTokenSuccess = decode(&mut frame)?;
            if ok.request_id != request_id {
                continue;
            }
            let coinbase_outputs: Vec<TxOut> =
                bitcoin::consensus::deserialize(ok.coinbase_outputs.as_bytes()).map_err(|e| {
                    JdError::Protocol(format!("coinbase outputs that do not decode: {e}"))
                })?;
            return Ok(Allocation {
                token: Token(ok.mining_job_token.as_bytes().to_vec()),
                coinbase_outputs,
            });
        }
    }

    /// Declares `job` under `token` and returns the token its `SetCustomMiningJob` must carry.
    /// Transactions the JDS asks for are sent from the template.
    ///
    /// # Errors
    /// [`JdError::Refused`] with the JDS's error code, or a transport failure.
    pub async fn declare(&mut self, job: &Declarable, token: &Token) -> Result<Token, JdError> {
        let request_id = self.request_id();
        let wtxids: Vec<[u8; 32]> = job
            .template
            .txs
            .iter()
            .map(|t| t.wtxid.to_byte_array())
            .collect();
        let too_big = |what: &str| JdError::Protocol(format!("{what} too large to declare"));
        let msg = DeclareMiningJob {
            request_id,
            mining_job_token: B0255::try_from(token.as_bytes()).map_err(|_| too_big("token"))?,
            version: job.version.to_consensus() as u32,
            coinbase_tx_prefix: B064K::try_from(&job.coinbase_prefix[..])
                .map_err(|_| too_big("coinbase"))?,
            coinbase_tx_suffix: B064K::try_from(&job.coinbase_suffix[..])
                .map_err(|_| too_big("coinbase"))?,
            wtxid_list: Seq064K::new(wtxids.iter().map(U256::from).collect())
                .map_err(|_| too_big("transaction list"))?,
            excess_data: B064K::try_from(&b""[..]).expect("empty fits"),
        };
        self.send(msg, MESSAGE_TYPE_DECLARE_MINING_JOB).await?;
        if let Some(t) = &self.tally {
            t.sent();
        }
        loop {
            let mut frame = self.recv("DeclareMiningJob").await?;
            match frame.msg_type {
                MESSAGE_TYPE_DECLARE_MINING_JOB_SUCCESS => {
                    let ok: DeclareMiningJobSuccess = decode(&mut frame)?;
                    if ok.request_id == request_id {
                        if let Some(t) = &self.tally {
                            t.accepted();
                        }
                        return Ok(Token(ok.new_mining_job_token.as_bytes().to_vec()));
                    }
                }
                MESSAGE_TYPE_DECLARE_MINING_JOB_ERROR => {
                    let err: DeclareMiningJobError = decode(&mut frame)?;
                    if err.request_id == request_id {
                        let code = err.error_code.as_utf8_or_hex();
                        if let Some(t) = &self.tally {
                            t.refused(&code);
                        }
                        return Err(JdError::Refused { code });
                    }
                }
                MESSAGE_TYPE_PROVIDE_MISSING_TRANSACTIONS => {
                    let ask: ProvideMissingTransactions = decode(&mut frame)?;
                    self.provide_missing(&ask, &job.template).await?;
                }
                other => debug!(msg_type = other, "ignored while declaring"),
            }
        }
    }

    /// Answers a `ProvideMissingTransactions` from the template being declared.
    async fn provide_missing(
        &self,
        ask: &ProvideMissingTransactions<'_>,
        template: &Template,
    ) -> Result<(), JdError> {
        let too_big = |what: &str| JdError::Protocol(format!("{what} too large to send"));
        let txs = &template.txs;
        let mut list = Vec::with_capacity(ask.unknown_tx_position_list.len());
        for &pos in ask.unknown_tx_position_list.iter() {
            let tx = txs.get(usize::from(pos)).ok_or_else(|| {
                JdError::Protocol(format!("a request for transaction {pos} of {}", txs.len()))
            })?;
            list.push(B016M::try_from(&tx.data[..]).map_err(|_| too_big("transaction"))?);
        }
        info!(
            count = list.len(),
            request = ask.request_id,
            "job declarator asked for transactions it lacks; sending them"
        );
        let reply = ProvideMissingTransactionsSuccess {
            request_id: ask.request_id,
            transaction_list: Seq064K::new(list).map_err(|_| too_big("transaction list"))?,
        };
        self.send(reply, MESSAGE_TYPE_PROVIDE_MISSING_TRANSACTIONS_SUCCESS)
            .await
    }
}
