//! A session over one socket: lines in, the state machine's replies and jobs out, its shares
//! and blocks handed on. One task per miner; a slow or broken miner only stalls its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{end, Effect, Now, Session, SessionEnd};
use crate::job::Job;
use crate::sv1::conn::{ConnError, Connection};
use crate::upstream::shares::ShareRoute;

/// Serves one miner until it leaves, misbehaves, or the proxy shuts down.
pub async fn serve(
    mut conn: Connection,
    mut session: Session,
    mut jobs: watch::Receiver<Arc<Job>>,
    shutdown: CancellationToken,
) {
    // The settings stay behind the shared Arc: a copy in every miner's task is memory each
    // idle connection pays.
    let shared = session.shared.clone();
    let cfg = &shared.sv1;
    let mut tick = ticks(session.tick_every());
    // One timer and one shutdown registration for the whole session: building them anew on
    // every pass of the loop cost more than the job fan-out itself at 10,000 miners.
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    let silence = tokio::time::sleep_until(session.deadline().at().into());
    tokio::pin!(silence);
    let mut route = ShareRoute::default();
    // On a weighted route: the route from now on, as the rebalancer moves the miner.
    let mut moves: Option<watch::Receiver<usize>> = None;
    let end = loop {
        let mut moved = None;
        // Lines already received are handled before a job switch: the miner sent them while
        // it still worked on the old job.
        let step = tokio::select! {
            biased;
            () = &mut cancelled => Err(SessionEnd::Shutdown),
            read = conn.read_line() => match read {
                Err(ConnError::Closed) => Err(SessionEnd::Closed),
                Err(e) => Err(SessionEnd::Conn(e)),
                // The timer is moved lazily, when it fires, not on every line.
                Ok(line) => session.handle_line(&line, Now::current()),
            },
            changed = jobs.changed(), if session.is_mining() => match changed {
                Err(_) => Err(SessionEnd::JobsStopped),
                Ok(()) => {
                    let job = jobs.borrow_and_update().clone();
                    session.on_job(job);
                    Ok(())
                }
            },
            to = next_move(&mut moves), if session.is_mining() => {
                moved = to;
                Ok(())
            }
            _ = tick.tick(), if session.is_mining() => {
                session.on_tick(Now::current());
                if tick.period() != session.tick_every() {
                    tick = ticks(session.tick_every());
                }
                Ok(())
            }
            () = &mut silence => {
                let deadline = session.deadline();
                if Instant::now() >= deadline.at() {
                    Err(SessionEnd::Late(deadline))
                } else {
                    silence.as_mut().reset(deadline.at().into());
                    Ok(())
                }
            }
        };
        if let Some((route_jobs, route_moves)) = session.take_handoff() {
            // Seated on its route: from now on the miner follows that route's jobs.
            if let Some(j) = route_jobs {
                jobs = j;
            }
            moves = route_moves.or(moves);
        }
        if let Some((to, router)) = moved.zip(shared.router.as_ref()) {
            jobs = router.jobs(to);
            let job = jobs.borrow_and_update().clone();
            session.move_to(to, job);
        }
        hand_on(&mut session, &mut route);
        if let Err(end) = step {
            if matches!(end, SessionEnd::Shutdown) {
                end::leave(&mut conn, &mut session, &mut route).await;
            }
            break end;
        }
        // Pipelined requests are answered together in one write.
        if !session.out.is_empty() && !conn.has_buffered_line() {
            if let Err(e) = flush(&mut conn, &mut session.out, cfg.write_timeout).await {
                break e;
            }
        }
    };
    if !session.out.is_empty() {
        let _ = flush(&mut conn, &mut session.out, cfg.write_timeout).await;
    }
    finish(&session, &end);
}

/// The route the rebalancer moves the miner to; pending forever without moves to follow.
async fn next_move(moves: &mut Option<watch::Receiver<usize>>) -> Option<usize> {
    let Some(m) = moves else {
        return std::future::pending().await;
    };
    match m.changed().await {
        Ok(()) => Some(*m.borrow_and_update()),
        // The router is gone: the proxy is stopping.
        Err(_) => std::future::pending().await,
    }
}

/// The session's clock: vardiff's retarget interval.
fn ticks(every: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// Passes shares to their links and blocks to the router.
pub(super) fn hand_on(session: &mut Session, route: &mut ShareRoute) {
    for effect in session.effects.drain(..) {
        match effect {
            Effect::Share { link, share } => {
                if route.send(&session.shared.links, link, share).is_err() {
                    session.shared.stats.pool_dropped(1);
                }
            }
            Effect::Block(block) => session.shared.blocks.found(*block),
        }
    }
}

fn finish(session: &Session, end: &SessionEnd) {
    session.shared.stats.connection_closed();
    let side = end.side();
    if session.is_mining() {
        info!(peer = %session.peer, worker = session.worker_name(), reason = %end, %side, "ASIC disconnected");
    } else {
        debug!(peer = %session.peer, reason = %end, %side, "connection closed before mining");
    }
    if matches!(end, SessionEnd::Conn(_) | SessionEnd::NotStratum { .. }) {
        warn!(peer = %session.peer, worker = session.worker_name(), reason = %end, "miner cut off");
    }
}

/// Output buffer capacity kept between writes.
const OUT_KEEP: usize = 512;

async fn flush(
    conn: &mut Connection,
    out: &mut Vec<u8>,
    timeout: Duration,
) -> Result<(), SessionEnd> {
    let write = tokio::time::timeout(timeout, conn.write_all(out)).await;
    out.clear();
    // Replies fit in a few hundred bytes; a notify line grows the buffer past a kilobyte, and
    // an idle miner would keep that between tips: give it back (one allocation per job sent
    // is nothing next to the write it goes with).
    if out.capacity() > OUT_KEEP {
        *out = Vec::new();
    }
    match write {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(SessionEnd::Write(e)),
        Err(_) => Err(SessionEnd::WriteTimeout),
    }
}
