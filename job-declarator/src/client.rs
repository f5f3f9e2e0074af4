//! The JDS connection: `AllocateMiningJobToken`, `DeclareMiningJob` (answering
//! `ProvideMissingTransactions` from the template) and `PushSolution`.

use std::fmt;
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
use std::sync::Arc;

use template_provider::sv2::client::{open, recv, OpenError};
use template_provider::sv2::{AuthorityPublicKey, Frame, NoiseWriter, Sv2Error};
use template_provider::Template;
use tokio::sync::{mpsc, Mutex};
use tracing::{debug, info};

/// Protocol version spoken (the only one there is).
const VERSION: u16 = 2;
/// `SetupConnection` flag: the declaration carries the transaction list (full-template mode).
pub const DECLARE_TX_DATA: u32 = 0x1;

/// What went wrong with the JDS.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JdError {
    #[error("job declarator at {address}: {source}")]
    Open { address: String, source: OpenError },
    #[error("job declarator: {0}")]
    Sv2(#[from] Sv2Error),
    #[error("job declarator refused the declaration: {code}")]
    Refused { code: String },
    #[error("job declarator did not answer {what} within {timeout:?}")]
    Timeout {
        what: &'static str,
        timeout: Duration,
    },
    #[error("job declarator sent {0}")]
    Protocol(String),
}

/// A mining job token, as opaque bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Vec<u8>);

impl Token {
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
    pub token: Token,
    pub coinbase_outputs: Vec<TxOut>,
}

/// One job to declare.
#[derive(Debug)]
pub struct Declaration<'a> {
    pub token: Token,
    /// The header version the job is mined at (the pool checks the custom job against it).
    pub version: u32,
    /// The coinbase's witness serialization up to the extranonce push, and after it.
    pub coinbase_prefix: Vec<u8>,
    pub coinbase_suffix: Vec<u8>,
    /// The transactions; in full-template mode their wtxids are listed and any the JDS lacks
    /// are sent on request.
    pub template: &'a Template,
}

/// A block found on a declared job.
#[derive(Debug, Clone)]
pub struct Solution {
    /// The whole extranonce (the channel's prefix included).
    pub extranonce: Vec<u8>,
    pub prev_hash: bitcoin::BlockHash,
    pub nonce: u32,
    pub ntime: u32,
    pub nbits: u32,
    pub version: u32,
}

/// One JDS connection.
#[derive(Debug)]
pub struct JdClient {
    address: String,
    frames: mpsc::Receiver<Result<Frame, Sv2Error>>,
    /// Shared with [`SolutionPusher`]s: a solution never waits for a declaration's answer.
    writer: Arc<Mutex<NoiseWriter>>,
    timeout: Duration,
    next_request: u32,
}

/// Sends `PushSolution` on a JDS connection while its [`JdClient`] may be waiting for an answer.
#[derive(Debug, Clone)]
pub struct SolutionPusher {
    writer: Arc<Mutex<NoiseWriter>>,
}

impl SolutionPusher {
    /// Tells the JDS about a block found on a declared job.
    ///
    /// # Errors
    /// A lost connection.
    pub async fn push(&self, s: &Solution) -> Result<(), JdError> {
        let prev = s.prev_hash.to_byte_array();
        let msg = PushSolution {
            extranonce: binary_sv2::B032::try_from(&s.extranonce[..])
                .map_err(|_| JdError::Protocol("extranonce above 32 bytes".into()))?,
            prev_hash: U256::from(&prev),
            nonce: s.nonce,
            ntime: s.ntime,
            nbits: s.nbits,
            version: s.version,
        };
        self.writer
            .lock()
            .await
            .send(msg, MESSAGE_TYPE_PUSH_SOLUTION, false)
            .await?;
        Ok(())
    }
}

fn decode<'a, T: binary_sv2::Deserialize<'a>>(
    frame: &'a mut Frame,
    what: &str,
) -> Result<T, JdError> {
    binary_sv2::from_bytes(&mut frame.payload)
        .map_err(|e| JdError::Protocol(format!("an undecodable {what}: {e:?}")))
}

impl JdClient {
    /// Connects (pinning `authority`; `connect_timeout` for TCP, handshake and setup, `timeout`
    /// for every answer after that) and sets up declaration: full-template mode when
    /// `declare_tx_data`, coinbase-only mode otherwise (tokens only; the pool never sees the
    /// transactions).
    ///
    /// # Errors
    /// Unreachable, wrong key, or a refused setup (a JDS that supports only the other mode
    /// refuses here, with its reason).
    pub async fn connect(
        address: &str,
        authority: AuthorityPublicKey,
        declare_tx_data: bool,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<JdClient, JdError> {
        let client = open(
            address,
            authority,
            Protocol::JobDeclarationProtocol,
            VERSION,
            if declare_tx_data { DECLARE_TX_DATA } else { 0 },
            connect_timeout,
        )
        .await
        .map_err(|source| JdError::Open {
            address: address.to_owned(),
            source,
        })?;
        info!(%address, "job declarator connected");
        Ok(JdClient {
            address: address.to_owned(),
            frames: client.frames,
            writer: Arc::new(Mutex::new(client.writer)),
            timeout,
            next_request: 1,
        })
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
        recv(&mut self.frames, self.timeout)
            .await
            .map_err(|e| match e {
                OpenError::Timeout(timeout) => JdError::Timeout { what, timeout },
                OpenError::Sv2(e) => JdError::Sv2(e),
                other => JdError::Protocol(other.to_string()),
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
            let ok: AllocateMiningJobTokenSuccess = decode(&mut frame, "token")?;
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

    /// Declares a job and returns the token its `SetCustomMiningJob` must carry. Transactions
    /// the JDS asks for are sent from the template.
    ///
    /// # Errors
    /// [`JdError::Refused`] with the JDS's error code, or a transport failure.
    pub async fn declare(&mut self, d: &Declaration<'_>) -> Result<Token, JdError> {
        let request_id = self.request_id();
        let wtxids: Vec<[u8; 32]> = d
            .template
            .txs
            .iter()
            .map(|t| t.wtxid.to_byte_array())
            .collect();
        let too_big = |what: &str| JdError::Protocol(format!("{what} too large to declare"));
        let msg = DeclareMiningJob {
            request_id,
            mining_job_token: B0255::try_from(d.token.as_bytes()).map_err(|_| too_big("token"))?,
            version: d.version,
            coinbase_tx_prefix: B064K::try_from(&d.coinbase_prefix[..])
                .map_err(|_| too_big("coinbase"))?,
            coinbase_tx_suffix: B064K::try_from(&d.coinbase_suffix[..])
                .map_err(|_| too_big("coinbase"))?,
            wtxid_list: Seq064K::new(wtxids.iter().map(U256::from).collect())
                .map_err(|_| too_big("transaction list"))?,
            excess_data: B064K::try_from(&b""[..]).expect("empty fits"),
        };
        self.send(msg, MESSAGE_TYPE_DECLARE_MINING_JOB).await?;
        loop {
            let mut frame = self.recv("DeclareMiningJob").await?;
            match frame.msg_type {
                MESSAGE_TYPE_DECLARE_MINING_JOB_SUCCESS => {
                    let ok: DeclareMiningJobSuccess = decode(&mut frame, "declaration success")?;
                    if ok.request_id == request_id {
                        return Ok(Token(ok.new_mining_job_token.as_bytes().to_vec()));
                    }
                }
                MESSAGE_TYPE_DECLARE_MINING_JOB_ERROR => {
                    let err: DeclareMiningJobError = decode(&mut frame, "declaration error")?;
                    if err.request_id == request_id {
                        return Err(JdError::Refused {
                            code: err.error_code.as_utf8_or_hex(),
                        });
                    }
                }
                MESSAGE_TYPE_PROVIDE_MISSING_TRANSACTIONS => {
                    let ask: ProvideMissingTransactions = decode(&mut frame, "missing-tx request")?;
                    let txs = &d.template.txs;
                    let mut list = Vec::with_capacity(ask.unknown_tx_position_list.len());
                    for &pos in ask.unknown_tx_position_list.iter() {
                        let tx = txs.get(usize::from(pos)).ok_or_else(|| {
                            JdError::Protocol(format!(
                                "a request for transaction {pos} of {}",
                                txs.len()
                            ))
                        })?;
                        list.push(
                            B016M::try_from(&tx.data[..]).map_err(|_| too_big("transaction"))?,
                        );
                    }
                    info!(
                        count = list.len(),
                        request = ask.request_id,
                        "job declarator asked for transactions it lacks; sending them"
                    );
                    let reply = ProvideMissingTransactionsSuccess {
                        request_id: ask.request_id,
                        transaction_list: Seq064K::new(list)
                            .map_err(|_| too_big("transaction list"))?,
                    };
                    self.send(reply, MESSAGE_TYPE_PROVIDE_MISSING_TRANSACTIONS_SUCCESS)
                        .await?;
                }
                other => debug!(msg_type = other, "ignored while declaring"),
            }
        }
    }
}
