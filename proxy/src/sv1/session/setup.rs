//! The handshake: `mining.configure`, `mining.subscribe`, difficulty suggestions, and the
//! moment a subscribed and authorized miner starts mining on its route. None of it is on the
//! share path.

use std::sync::Arc;
use std::time::Instant;

use mining_types::Difficulty;
use tracing::{debug, info};

use super::{Session, SessionEnd};
use crate::figures::asic::Identity;
use crate::sv1::codec::{render, Configure, ConfigureReply};

impl Session {
    pub(super) fn subscribe(
        &mut self,
        id: &str,
        agent: Option<&str>,
        now: Instant,
    ) -> Result<(), SessionEnd> {
        if self.extranonce1.is_none() {
            match self.shared.extranonces.allocate() {
                Some(lease) => self.extranonce1 = Some(lease),
                None => {
                    render::error(&mut self.out, id, 20, "no free extranonce1; try later");
                    return Err(SessionEnd::ExtranonceSpace);
                }
            }
        }
        self.agent = agent.map(|a| a.chars().take(64).collect());
        let en1 = self.extranonce1.as_ref().expect("allocated above").value();
        let en2_len = self.shared.sv1.layout.extranonce2_len();
        render::subscribed(&mut self.out, id, &en1.to_string(), en2_len);
        self.maybe_start(now);
        Ok(())
    }

    pub(super) fn suggest_difficulty(&mut self, d: f64, now: Instant) {
        // Each honoured suggestion is a new difficulty and a job sent again: a miner that
        // suggests in a loop gets them at a bounded pace and one log line.
        if !self.suggestions.allow(now) {
            if self.suggestions.ignored == 1 {
                info!(peer = %self.peer, worker = self.worker_name(), "difficulty suggestions too often; honouring one per 10 s");
            }
            return;
        }
        match Difficulty::new(d) {
            Ok(d) => {
                let d = self.vardiff.bound(d);
                self.vardiff.reset(now);
                if self.mining {
                    self.change_difficulty(d);
                } else {
                    self.set_difficulty(d);
                }
            }
            Err(e) => debug!(peer = %self.peer, error = %e, "ignored difficulty suggestion"),
        }
    }

    pub(super) fn configure(&mut self, id: &str, c: Configure) {
        let mut reply = ConfigureReply::default();
        if let Some(asked) = c.version_rolling {
            let mask = asked & self.shared.sv1.version_mask;
            reply.version_rolling = Some((mask != 0).then_some(mask));
            if mask != 0 {
                self.version_mask = Some(mask);
            }
        }
        if let Some(min) = c.minimum_difficulty {
            reply.minimum_difficulty = true;
            if let Some(min) = min.and_then(|m| Difficulty::new(m).ok()) {
                self.vardiff.set_floor(min);
                let bounded = self.vardiff.bound(self.difficulty);
                if self.mining {
                    self.change_difficulty(bounded);
                } else {
                    self.set_difficulty(bounded);
                }
            }
        }
        // The extranonce of a connection never changes, so there is nothing to announce.
        reply.subscribe_extranonce = c.subscribe_extranonce;
        reply.unknown = c.unknown;
        render::configured(&mut self.out, id, &reply);
    }

    /// Work goes out once the miner is both subscribed and authorized, so the subscribe reply
    /// is always the first line after the subscribe request.
    pub(super) fn maybe_start(&mut self, now: Instant) {
        if self.mining || self.extranonce1.is_none() || self.worker.is_none() {
            return;
        }
        self.mining = true;
        self.shared.stats.miner_started();
        let identity = Identity {
            id: 0,
            worker: self.worker.clone().expect("authorized"),
            peer: self.peer,
            agent: self.agent.as_deref().map(Arc::from),
            version_mask: self.version_mask,
            connected_at: u64::from(self.unix),
        };
        let on_board = self.shared.board.join(identity, self.difficulty.get());
        self.take_seat(on_board.identity.id);
        self.on_board = Some(on_board);
        self.vardiff.reset(now);
        info!(
            peer = %self.peer,
            worker = self.worker_name(),
            agent = self.agent.as_deref().unwrap_or("-"),
            extranonce1 = %self.extranonce1.as_ref().expect("subscribed").value(),
            difficulty = %self.difficulty,
            version_rolling = ?self.version_mask.map(|m| format!("{m:08x}")),
            route = self.route_name(),
            "ASIC connected"
        );
        render::set_difficulty(&mut self.out, self.difficulty.get());
        self.push_job(self.current.clone(), true);
    }

    /// Seats the miner on its route (board id `id`): its first job is the route's newest.
    pub(super) fn take_seat(&mut self, id: u64) {
        let Some(router) = &self.shared.router else {
            return;
        };
        let worker = self.worker.clone().expect("authorized");
        let mut seat = router.seat(&worker, self.peer.ip(), id);
        if let Some(jobs) = &mut seat.jobs {
            self.current = jobs.borrow_and_update().clone();
        }
        self.route = seat.route;
        if seat.jobs.is_some() || seat.moves.is_some() {
            self.handoff = Some((seat.jobs, seat.moves));
        }
        self.seat = Some(seat.guard);
    }

    /// The route's name, for logs.
    pub(super) fn route_name(&self) -> &str {
        let route = self
            .shared
            .router
            .as_ref()
            .and_then(|r| r.routes().get(self.route));
        route.map_or("default", |r| r.figures.name.as_str())
    }
}
