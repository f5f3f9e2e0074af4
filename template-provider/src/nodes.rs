//! The farm's nodes, in order of preference: templates come from the first that answers.
//!
//! Each node runs a [`TemplateSource`] of its own, all numbering templates from one counter. The
//! selector publishes the templates of the most preferred node that is up; when it goes down
//! the next one's newest template goes out at once, and when it comes back its templates take
//! over again. With no node up, the last template stays published (miners keep their job) and
//! the outage is logged, with [`NodeSet::up`] saying so to whoever must act (pool mode mines
//! the pool's own jobs meanwhile).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use mining_types::Template;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::figures::SourceFigures;
use crate::node::rpc::RpcClient;
use crate::node::NodeError;
use crate::policy::LivePolicy;
use crate::source::{TemplateSource, TemplateSourceConfig};

/// One node: its name in logs and its source.
#[derive(Debug, Clone)]
pub struct NodeSource {
    /// As configured (the RPC URL unless named).
    pub name: String,
    /// Its templates.
    pub source: TemplateSource,
}

/// What the selector publishes besides templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    /// Templates come from the node at this place in the list.
    Node(usize),
    /// No node answers: the last template stays, since this time.
    NoNode(Instant),
}

/// The nodes and their selector, running.
#[derive(Debug)]
pub struct NodeSet {
    /// The newest template of the node in use.
    pub templates: watch::Receiver<Arc<Template>>,
    /// Which node that is.
    pub serving: watch::Receiver<Serving>,
}

impl NodeSet {
    /// Sources for `nodes` (name, RPC, how to watch it), numbering templates together.
    /// They report into one [`SourceFigures`] (a tip is seen once, whichever node saw it).
    pub fn sources(nodes: Vec<(String, RpcClient, TemplateSourceConfig)>) -> Vec<NodeSource> {
        let ids = Arc::new(AtomicU64::new(1));
        let figures = SourceFigures::default();
        // The farm's policy is one for every node: one handle, so a reload reaches them all.
        let policy = LivePolicy::new(
            nodes
                .first()
                .map(|n| n.2.policy.clone())
                .unwrap_or_default(),
        );
        nodes
            .into_iter()
            .map(|(name, rpc, config)| NodeSource {
                name,
                source: TemplateSource::with_ids(rpc, config, ids.clone())
                    .reporting_to(figures.clone())
                    .with_policy(policy.clone()),
            })
            .collect()
    }

    /// Starts every node's watchers and the selector; returns once a node gave its first
    /// template (the first node in order that does).
    ///
    /// # Errors
    /// No node gave a template: the last node's error.
    pub async fn start(
        nodes: Vec<NodeSource>,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Result<NodeSet, NodeError> {
        let (events, rx) = mpsc::unbounded_channel();
        let mut first: Option<(usize, Arc<Template>)> = None;
        let mut last_error = None;
        for (i, node) in nodes.iter().enumerate() {
            match node.source.clone().spawn(tracker, shutdown.clone()).await {
                Ok(templates) => {
                    first.get_or_insert_with(|| (i, templates.borrow().clone()));
                    tracker.spawn(forward(i, templates, node.source.health(), events.clone()));
                }
                Err(e) => {
                    warn!(node = %node.name, error = %e, "node unavailable at start; retrying in the background");
                    last_error = Some(NodeError::from(e));
                    tracker.spawn(start_later(
                        i,
                        node.clone(),
                        events.clone(),
                        tracker.clone(),
                        shutdown.clone(),
                    ));
                }
            }
        }
        let Some((index, template)) = first else {
            return Err(last_error.unwrap_or(NodeError::IpcUnavailable));
        };
        info!(node = %nodes[index].name, height = template.height, "templates from the node");
        let (templates_tx, templates) = watch::channel(template);
        let (serving_tx, serving) = watch::channel(Serving::Node(index));
        let selector = Selector::new(nodes, templates_tx, serving_tx);
        tracker.spawn(selector.run(rx, shutdown.clone()));
        Ok(NodeSet { templates, serving })
    }
}

/// What a node's forwarder tells the selector.
#[derive(Debug)]
enum Event {
    Template(usize, Arc<Template>),
    Up(usize, bool),
}

/// Forwards one node's templates and health to the selector.
async fn forward(
    i: usize,
    mut templates: watch::Receiver<Arc<Template>>,
    mut up: watch::Receiver<bool>,
    events: mpsc::UnboundedSender<Event>,
) {
    let initial = templates.borrow_and_update().clone();
    if events.send(Event::Template(i, initial)).is_err() {
        return;
    }
    loop {
        let event = tokio::select! {
            r = templates.changed() => match r {
                Ok(()) => Event::Template(i, templates.borrow_and_update().clone()),
                Err(_) => return,
            },
            r = up.changed() => match r {
                Ok(()) => Event::Up(i, *up.borrow_and_update()),
                Err(_) => return,
            },
        };
        if events.send(event).is_err() {
            return;
        }
    }
}

/// A node that was down at start: tried every second until it gives a template.
async fn start_later(
    i: usize,
    node: NodeSource,
    events: mpsc::UnboundedSender<Event>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let _ = events.send(Event::Up(i, false));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
        // A node that comes up later is held to the same checks as one there at start.
        match node.source.check_node().await {
            Ok(_) => {}
            Err(e @ (NodeError::WrongNetwork { .. } | NodeError::InitialBlockDownload { .. })) => {
                error!(node = %node.name, error = %e, "node answers but cannot be used");
                continue;
            }
            Err(_) => continue,
        }
        if let Ok(templates) = node.source.clone().spawn(&tracker, shutdown.clone()).await {
            info!(node = %node.name, "node answers: its templates are available");
            let _ = events.send(Event::Up(i, true));
            forward(i, templates, node.source.health(), events).await;
            return;
        }
    }
}

/// Picks the node whose templates go out.
struct Selector {
    names: Vec<String>,
    latest: Vec<Option<Arc<Template>>>,
    up: Vec<bool>,
    out: watch::Sender<Arc<Template>>,
    serving: watch::Sender<Serving>,
}

impl Selector {
    fn new(
        nodes: Vec<NodeSource>,
        out: watch::Sender<Arc<Template>>,
        serving: watch::Sender<Serving>,
    ) -> Self {
        let n = nodes.len();
        Selector {
            names: nodes.into_iter().map(|n| n.name).collect(),
            latest: vec![None; n],
            up: vec![true; n],
            out,
            serving,
        }
    }

    async fn run(
        mut self,
        mut events: mpsc::UnboundedReceiver<Event>,
        shutdown: CancellationToken,
    ) {
        loop {
            let event = tokio::select! {
                () = shutdown.cancelled() => return,
                e = events.recv() => match e { Some(e) => e, None => return },
            };
            self.on_event(event);
        }
    }

    fn on_event(&mut self, event: Event) {
        let before = *self.serving.borrow();
        let changed = match event {
            Event::Template(i, t) => {
                self.latest[i] = Some(t);
                i
            }
            Event::Up(i, up) => {
                self.up[i] = up;
                i
            }
        };
        let now = self.pick();
        match (before, now) {
            (Serving::Node(a), Some(b)) if a == b => {
                if changed == b {
                    self.publish(b);
                }
            }
            (_, Some(b)) => {
                info!(node = %self.names[b], "templates now from this node");
                self.serving.send_replace(Serving::Node(b));
                self.publish(b);
            }
            (Serving::Node(_), None) => {
                error!("no node answers: miners keep the last job until one does (blocks found meanwhile are journaled and submitted when a node is back)");
                self.serving.send_replace(Serving::NoNode(Instant::now()));
            }
            (Serving::NoNode(_), None) => {}
        }
    }

    /// The most preferred node that is up and has a template.
    fn pick(&self) -> Option<usize> {
        (0..self.up.len()).find(|&i| self.up[i] && self.latest[i].is_some())
    }

    fn publish(&self, i: usize) {
        if let Some(t) = &self.latest[i] {
            let current = self.out.borrow().clone();
            if !Arc::ptr_eq(&current, t) {
                self.out.send_replace(t.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bitcoin::hashes::Hash;
    use bitcoin::{block, Amount, BlockHash, CompactTarget, Network};
    use mining_types::{TemplateId, TemplateKind};

    use super::*;

    fn template(id: u64) -> Arc<Template> {
        Arc::new(Template {
            id: TemplateId::new(id),
            kind: TemplateKind::Full,
            network: Network::Regtest,
            height: 10,
            prev_hash: BlockHash::all_zeros(),
            version: block::Version::TWO,
            bits: CompactTarget::from_consensus(0x207f_ffff),
            min_time: 0,
            cur_time: 0,
            coinbase_value: Amount::ZERO,
            witness_commitment: None,
            txs: Arc::new(vec![]),
            merkle_path: vec![],
        })
    }

    fn selector() -> (
        Selector,
        watch::Receiver<Arc<Template>>,
        watch::Receiver<Serving>,
    ) {
        let (out, templates) = watch::channel(template(1));
        let (serving_tx, serving) = watch::channel(Serving::Node(0));
        let s = Selector {
            names: vec!["main".into(), "backup".into()],
            latest: vec![Some(template(1)), Some(template(2))],
            up: vec![true, true],
            out,
            serving: serving_tx,
        };
        (s, templates, serving)
    }

    #[test]
    fn the_backup_takes_over_and_the_primary_takes_back() {
        let (mut s, templates, serving) = selector();
        s.on_event(Event::Template(1, template(3)));
        assert_eq!(
            templates.borrow().id,
            TemplateId::new(1),
            "a backup's template waits"
        );
        s.on_event(Event::Up(0, false));
        assert_eq!(*serving.borrow(), Serving::Node(1));
        assert_eq!(
            templates.borrow().id,
            TemplateId::new(3),
            "its newest goes out at once"
        );
        s.on_event(Event::Template(0, template(4)));
        assert_eq!(
            templates.borrow().id,
            TemplateId::new(3),
            "the down node is not used"
        );
        s.on_event(Event::Up(0, true));
        assert_eq!(*serving.borrow(), Serving::Node(0));
        assert_eq!(templates.borrow().id, TemplateId::new(4));
    }

    #[test]
    fn with_no_node_up_the_last_template_stays() {
        let (mut s, templates, serving) = selector();
        s.on_event(Event::Up(1, false));
        assert_eq!(*serving.borrow(), Serving::Node(0));
        s.on_event(Event::Up(0, false));
        assert!(matches!(*serving.borrow(), Serving::NoNode(_)));
        assert_eq!(templates.borrow().id, TemplateId::new(1));
        s.on_event(Event::Up(1, true));
        assert_eq!(*serving.borrow(), Serving::Node(1));
        assert_eq!(templates.borrow().id, TemplateId::new(2));
    }
}
