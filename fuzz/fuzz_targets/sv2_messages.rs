//! Stratum V2 message bodies as they arrive decrypted from a pool, a JDS, a Template Provider
//! or a TDP client, each decoded with `Frame::decode` and handed to what our code does next.
//!
//! Input: frames of `[message type][length: u16 LE][body]`. The state carried between frames
//! is the state our tasks carry: the channel (`upstream/channel.rs`), the pool's own jobs
//! (`PoolJobs`), the custom jobs (`CustomJobs`), the declaration queue, the TDP client's
//! future templates and the provider's template store. Message types of the four protocols
//! do not overlap, so one stream mixes them all.

#![no_main]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use binary_sv2::{Seq064K, B016M};
use bitcoin::{Network, Target, TxOut};
use common_messages_sv2::{SetupConnection, SetupConnectionError, SetupConnectionSuccess};
use jd_proxy::job::{pool_outputs, Job, JobFactory};
use jd_proxy::upstream::custom_jobs::CustomJobs;
use jd_proxy::upstream::pool_jobs::{PoolJob, PoolJobs};
use jd_proxy::upstream::shares::{Links, PoolTag, MAX_EXTRANONCE};
use jd_proxy_fuzz::{coinbase, template};
use job_declaration_sv2::{
    AllocateMiningJobTokenSuccess, DeclareMiningJobError, DeclareMiningJobSuccess,
    ProvideMissingTransactions,
};
use job_declarator::queue::Step;
use job_declarator::{DeclarationQueue, JdError, Token};
use libfuzzer_sys::fuzz_target;
use mining_sv2::*;
use mining_types::{CoinbaseSplit, ExtranonceLayout, JobId, PoolJobId, Template, TemplateId};
use sv2_wire::tdp::{solution_from_tdp, template_from_tdp};
use sv2_wire::Frame;
use template_distribution_sv2::{
    CoinbaseOutputConstraints, NewTemplate, RequestTransactionData, SetNewPrevHash as TdpPrevHash,
    SubmitSolution, MESSAGE_TYPE_COINBASE_OUTPUT_CONSTRAINTS, MESSAGE_TYPE_NEW_TEMPLATE,
    MESSAGE_TYPE_REQUEST_TRANSACTION_DATA, MESSAGE_TYPE_SET_NEW_PREV_HASH,
    MESSAGE_TYPE_SUBMIT_SOLUTION,
};

const NETWORK: Network = Network::Regtest;

fuzz_target!(|data: &[u8]| {
    let mut peer = Peer::new();
    let mut rest = data;
    while let [msg_type, lo, hi, body @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(body.len());
        let mut frame = Frame {
            msg_type: *msg_type,
            extension_type: 0,
            payload: body[..len].to_vec(),
        };
        peer.on_frame(&mut frame);
        rest = &body[len..];
    }
});

/// The channel as `open_channel` leaves it.
struct Channel {
    id: u32,
    target: Target,
    prefix: Vec<u8>,
    extranonce_size: usize,
}

struct Peer {
    layout: ExtranonceLayout,
    tag: PoolTag,
    channel: Channel,
    pool_jobs: PoolJobs,
    custom: CustomJobs,
    pool_outputs: Vec<TxOut>,
    queue: DeclarationQueue<()>,
    factory: JobFactory,
    next_id: u32,
    /// The TDP client's templates waiting for their previous hash, and the last one.
    future: HashMap<u64, Vec<u8>>,
    prev: Option<Vec<u8>>,
    /// The provider's store, where a `SubmitSolution` finds its template.
    store: HashMap<u64, Arc<Template>>,
    now: Instant,
}

impl Peer {
    fn new() -> Self {
        let layout = ExtranonceLayout::new(4, 4).expect("valid");
        let t = template();
        Peer {
            layout,
            tag: Arc::new(Links::default()).register(0).0.tag,
            // What a pool grants when it asks for nothing more than our extranonce.
            channel: Channel {
                id: 1,
                target: Target::MAX,
                prefix: Vec::new(),
                extranonce_size: layout.total_len(),
            },
            pool_jobs: PoolJobs::new(NETWORK, layout.total_len()),
            custom: CustomJobs::default(),
            pool_outputs: Vec::new(),
            queue: DeclarationQueue::new(Token::new(vec![1])),
            factory: JobFactory::new(coinbase(), layout),
            next_id: 1,
            future: HashMap::new(),
            prev: None,
            store: HashMap::from([(t.id.get(), t)]),
            now: Instant::now(),
        }
    }

    fn on_frame(&mut self, f: &mut Frame) {
        match f.msg_type {
            // Common: the provider reads SetupConnection, clients its answers.
            0x00 => {
                if let Ok(m) = f.decode::<SetupConnection>() {
                    let _vendor: String = String::from_utf8_lossy(m.vendor.as_bytes())
                        .chars()
                        .take(64)
                        .collect();
                }
            }
            0x01 => drop(f.decode::<SetupConnectionSuccess>()),
            0x02 => {
                if let Ok(m) = f.decode::<SetupConnectionError>() {
                    m.error_code.as_utf8_or_hex();
                }
            }
            MESSAGE_TYPE_OPEN_EXTENDED_MINING_CHANNEL_SUCCESS => self.open(f),
            MESSAGE_TYPE_OPEN_MINING_CHANNEL_ERROR => {
                if let Ok(m) = f.decode::<OpenMiningChannelError>() {
                    m.error_code.as_utf8_or_hex();
                }
            }
            MESSAGE_TYPE_NEW_EXTENDED_MINING_JOB => {
                let job = self.pool_jobs.on_job(f, &self.fixed());
                self.pool_job(job.ok().flatten());
            }
            MESSAGE_TYPE_MINING_SET_NEW_PREV_HASH => {
                let job = self.pool_jobs.on_prev_hash(f, &self.fixed());
                self.pool_job(job.ok().flatten());
            }
            MESSAGE_TYPE_SET_CUSTOM_MINING_JOB_SUCCESS => {
                if let Ok(m) = f.decode::<SetCustomMiningJobSuccess>() {
                    let id = JobId::new(m.request_id);
                    self.custom
                        .set(id, PoolJobId(m.job_id), self.channel.target);
                }
            }
            MESSAGE_TYPE_SET_CUSTOM_MINING_JOB_ERROR => {
                if let Ok(m) = f.decode::<SetCustomMiningJobError>() {
                    m.error_code.as_utf8_or_hex();
                }
            }
            MESSAGE_TYPE_SET_TARGET => {
                if let Ok(m) = f.decode::<SetTarget>() {
                    if m.channel_id == self.channel.id {
                        self.channel.target = Target::from_le_bytes(*m.maximum_target.as_array());
                        self.channel.target.difficulty_float();
                    }
                }
            }
            MESSAGE_TYPE_SET_EXTRANONCE_PREFIX => self.new_prefix(f),
            MESSAGE_TYPE_SUBMIT_SHARES_SUCCESS => drop(f.decode::<SubmitSharesSuccess>()),
            MESSAGE_TYPE_SUBMIT_SHARES_ERROR => {
                if let Ok(m) = f.decode::<SubmitSharesError>() {
                    m.error_code.as_utf8_or_hex();
                }
            }
            MESSAGE_TYPE_UPDATE_CHANNEL_ERROR => {
                if let Ok(m) = f.decode::<UpdateChannelError>() {
                    m.error_code.as_utf8_or_hex();
                }
            }
            0x51 => self.token(f),
            0x55 => self.provide_missing(f),
            0x58 | 0x59 => self.declared(f),
            MESSAGE_TYPE_COINBASE_OUTPUT_CONSTRAINTS => {
                drop(f.decode::<CoinbaseOutputConstraints>());
            }
            MESSAGE_TYPE_NEW_TEMPLATE | MESSAGE_TYPE_SET_NEW_PREV_HASH => {
                if let Some(t) = self.tdp_template(f) {
                    self.farm_template(t);
                }
            }
            MESSAGE_TYPE_REQUEST_TRANSACTION_DATA => self.transaction_data(f),
            MESSAGE_TYPE_SUBMIT_SOLUTION => self.solution(f),
            _ => {}
        }
    }

    /// `open_channel`: a grant that does not fit our extranonce fails the pool.
    fn open(&mut self, f: &mut Frame) {
        let Ok(m) = f.decode::<OpenExtendedMiningChannelSuccess>() else {
            return;
        };
        let prefix = m.extranonce_prefix.as_bytes().to_vec();
        let size = usize::from(m.extranonce_size);
        if size < self.layout.total_len() || prefix.len() + size > MAX_EXTRANONCE {
            return;
        }
        self.channel = Channel {
            id: m.channel_id,
            target: Target::from_le_bytes(*m.target.as_array()),
            prefix,
            extranonce_size: size,
        };
        self.pool_jobs = PoolJobs::new(NETWORK, self.layout.total_len());
        self.custom = CustomJobs::default();
    }

    /// `Channel::fixed`: the channel's prefix and the padding up to its extranonce size.
    fn fixed(&self) -> Vec<u8> {
        let pad = self.channel.extranonce_size - self.layout.total_len();
        let mut fixed = self.channel.prefix.clone();
        fixed.resize(fixed.len() + pad, 0);
        fixed
    }

    fn new_prefix(&mut self, f: &mut Frame) {
        let Ok(m) = f.decode::<SetExtranoncePrefix>() else {
            return;
        };
        let prefix = m.extranonce_prefix.as_bytes().to_vec();
        if m.channel_id != self.channel.id
            || prefix.len() + self.channel.extranonce_size > MAX_EXTRANONCE
        {
            return;
        }
        self.channel.prefix = prefix;
        self.custom.clear();
        let job = self.pool_jobs.rebuild(&self.fixed());
        self.pool_job(job.ok().flatten());
    }

    fn job_id(&mut self) -> JobId {
        self.next_id += 1;
        JobId::new(self.next_id)
    }

    /// The publisher's `Command::PoolJob`, and the channel tracking it.
    fn pool_job(&mut self, job: Option<PoolJob>) {
        let Some(j) = job else { return };
        let job = Job::new(
            self.job_id(),
            j.template,
            j.coinbase,
            j.clean,
            Some(self.tag),
        );
        job.notify_line(false);
        self.custom
            .track_active(Arc::new(job), j.pool_job, self.channel.target);
    }

    /// A template of the farm's: the solo job the publisher makes, and, once the JDS gave
    /// its outputs, the job declared to it.
    fn farm_template(&mut self, t: Template) {
        let t = Arc::new(t);
        if self.store.len() >= 64 {
            self.store.clear();
        }
        self.store.insert(t.id.get(), t.clone());
        let _ = self.factory.make(t.clone(), None);
        if self.pool_outputs.is_empty() {
            return;
        }
        let outputs = pool_outputs(&self.pool_outputs, t.coinbase_value);
        let fixed = self.fixed();
        let tag = coinbase().tag;
        let Ok(split) =
            CoinbaseSplit::with_outputs(&t, &tag, &outputs, &fixed, self.layout.total_len())
        else {
            return;
        };
        let job = Arc::new(Job::new(self.job_id(), t, split, true, Some(self.tag)));
        // `declarable`: a job without a witness commitment is not declared.
        if job.coinbase.witness_parts().is_some() {
            self.queue.push(job.id, ());
        }
        self.custom.track(job);
    }

    /// `JdClient::allocate`, then the declarer's queue.
    fn token(&mut self, f: &mut Frame) {
        let Ok(m) = f.decode::<AllocateMiningJobTokenSuccess>() else {
            return;
        };
        let outputs: Result<Vec<TxOut>, _> =
            bitcoin::consensus::deserialize(m.coinbase_outputs.as_bytes());
        if let Some(outputs) = outputs.ok().filter(|o| !o.is_empty()) {
            self.pool_outputs = outputs;
        }
        if self.queue.next_step(self.now) == Step::Allocate {
            let _ = self
                .queue
                .on_token(Ok(Token::new(m.mining_job_token.as_bytes().to_vec())));
        }
    }

    /// `JdClient::declare`'s answers, then the queue and the custom jobs.
    fn declared(&mut self, f: &mut Frame) {
        let answer = if f.msg_type == 0x58 {
            let Ok(m) = f.decode::<DeclareMiningJobSuccess>() else {
                return;
            };
            Ok(Token::new(m.new_mining_job_token.as_bytes().to_vec()))
        } else {
            let Ok(m) = f.decode::<DeclareMiningJobError>() else {
                return;
            };
            Err(JdError::Refused {
                code: m.error_code.as_utf8_or_hex(),
            })
        };
        if let Step::Declare { .. } = self.queue.next_step(self.now) {
            if let job_declarator::queue::Outcome::Declared { id, .. } =
                self.queue.on_declared(answer, self.now)
            {
                self.custom.declared(id, self.now);
            }
        }
    }

    /// `JdClient::provide_missing`, from the fixture template (the one with transactions).
    fn provide_missing(&mut self, f: &mut Frame) {
        let Ok(m) = f.decode::<ProvideMissingTransactions>() else {
            return;
        };
        let t = template();
        let list: Option<Vec<B016M>> = m
            .unknown_tx_position_list
            .iter()
            .map(|&pos| B016M::try_from(&t.txs.get(usize::from(pos))?.data[..]).ok())
            .collect();
        if let Some(list) = list {
            let _ = Seq064K::new(list);
        }
    }

    /// The TDP client's assembler: a template once its previous hash is known.
    fn tdp_template(&mut self, f: &mut Frame) -> Option<Template> {
        let raw = f.payload.clone();
        if f.msg_type == MESSAGE_TYPE_NEW_TEMPLATE {
            let t: NewTemplate = f.decode().ok()?;
            if t.future_template {
                if self.future.len() > 16 {
                    self.future.clear();
                }
                self.future.insert(t.template_id, raw);
                return None;
            }
            let mut prev_raw = self.prev.clone()?;
            let prev: TdpPrevHash = binary_sv2::from_bytes(&mut prev_raw).ok()?;
            return template_from_tdp(&t, &prev, NETWORK).ok();
        }
        let p: TdpPrevHash = f.decode().ok()?;
        let future = self.future.remove(&p.template_id);
        self.future.clear();
        let template = future.and_then(|mut t_raw| {
            let t: NewTemplate = binary_sv2::from_bytes(&mut t_raw).ok()?;
            template_from_tdp(&t, &p, NETWORK).ok()
        });
        self.prev = Some(raw);
        template
    }

    /// The provider's answer to `RequestTransactionData`.
    fn transaction_data(&mut self, f: &mut Frame) {
        let Ok(m) = f.decode::<RequestTransactionData>() else {
            return;
        };
        if let Some(t) = self.store.get(&TemplateId::new(m.template_id).get()) {
            let list: Vec<B016M> = t
                .txs
                .iter()
                .filter_map(|tx| B016M::try_from(&tx.data[..]).ok())
                .collect();
            let _ = Seq064K::new(list);
        }
    }

    /// The provider's `solution`: the block built from the stored template.
    fn solution(&mut self, f: &mut Frame) {
        let Ok(m) = f.decode::<SubmitSolution>() else {
            return;
        };
        let solution = solution_from_tdp(&m);
        if let Some(t) = self.store.get(&solution.template_id.get()) {
            let _ = solution.assemble(t);
        }
    }
}
