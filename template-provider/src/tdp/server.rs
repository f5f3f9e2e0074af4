//! The Template Distribution server: accepts SV2 clients over Noise, one task each.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::session;
use super::store::TemplateStore;
use crate::blocks::Blocks;
use mining_types::Template;
use sv2_wire::AuthorityKeypair;

/// Server settings.
#[derive(Debug, Clone)]
pub struct TdpServerConfig {
    /// Our authority key pair: clients pin its public half.
    pub keys: AuthorityKeypair,
    /// How long the certificate we sign for each connection stays valid.
    pub cert_validity: Duration,
    /// Clients beyond this are refused.
    pub max_clients: usize,
    /// A client must finish the Noise handshake within this time.
    pub handshake_timeout: Duration,
    /// A client must send SetupConnection and CoinbaseOutputConstraints within this time.
    pub setup_timeout: Duration,
}

/// The server's settings and what it reports.
#[derive(Debug, Clone)]
pub struct Tdp {
    /// Its settings.
    pub config: TdpServerConfig,
    /// Clients connected now, for the operator.
    pub clients: Arc<AtomicUsize>,
}

/// What every session shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: TdpServerConfig,
    pub store: Arc<TemplateStore>,
    pub blocks: Blocks,
    /// Every session's reader and every block submission run on it.
    pub tracker: TaskTracker,
}

/// Serves templates from `templates` until shutdown.
pub async fn serve(
    listener: TcpListener,
    tdp: Tdp,
    mut templates: watch::Receiver<Arc<Template>>,
    blocks: Blocks,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let store = Arc::new(TemplateStore::default());
    store.insert(templates.borrow_and_update().clone());
    // Every template goes in the store before any session can announce it.
    let (announce_tx, announce) = watch::channel(templates.borrow().clone());
    {
        let store = store.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = templates.changed() => if r.is_err() { return },
                }
                let t = templates.borrow_and_update().clone();
                store.insert(t.clone());
                announce_tx.send_replace(t);
            }
        });
    }
    let Tdp { config, clients } = tdp;
    let limit = Arc::new(Semaphore::new(config.max_clients));
    let shared = Arc::new(Shared {
        config,
        store,
        blocks,
        tracker: tracker.clone(),
    });
    let local: Option<SocketAddr> = listener.local_addr().ok();
    info!(listen = ?local, authority = %shared.config.keys.public(), "Template Distribution server listening");
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            warn!(%peer, max = shared.config.max_clients, "client limit reached; refusing");
            drop(stream);
            continue;
        };
        let shared = shared.clone();
        let templates = announce.clone();
        let shutdown = shutdown.clone();
        let clients = clients.clone();
        tracker.spawn(async move {
            clients.fetch_add(1, Relaxed);
            session::run(stream, peer, shared, templates, shutdown).await;
            clients.fetch_sub(1, Relaxed);
            drop(permit);
        });
    }
}
