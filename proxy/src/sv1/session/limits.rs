//! What one connection may do, and for how long: a request budget, difficulty suggestions at a
//! bounded pace, and the deadlines that only real requests push back. Pure: the caller says
//! what time it is.

use std::time::{Duration, Instant};

/// Difficulty suggestions honoured at most this often; the rest are answered and ignored.
pub const SUGGEST_INTERVAL: Duration = Duration::from_secs(10);
/// A connection may send this many requests in a burst before the rate applies.
const BURST_SECONDS: f64 = 5.0;

/// A token bucket: `rate` requests a second, bursts of five seconds' worth.
#[derive(Debug, Clone)]
pub(super) struct Budget {
    tokens: f64,
    rate: f64,
    last: Instant,
}

impl Budget {
    pub fn new(rate: u32, now: Instant) -> Self {
        let rate = f64::from(rate.max(1));
        Budget {
            tokens: rate * BURST_SECONDS,
            rate,
            last: now,
        }
    }

    /// Spends one request; `false` when the connection is over its budget.
    pub fn spend(&mut self, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.rate * BURST_SECONDS);
        self.last = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// Difficulty suggestions: one honoured per [`SUGGEST_INTERVAL`].
#[derive(Debug, Clone, Default)]
pub(super) struct Suggestions {
    last: Option<Instant>,
    /// Ignored over the connection's life: the first one is logged, the rest only counted.
    pub ignored: u32,
}

impl Suggestions {
    /// Whether a suggestion at `now` is honoured.
    pub fn allow(&mut self, now: Instant) -> bool {
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < SUGGEST_INTERVAL)
        {
            self.ignored += 1;
            return false;
        }
        self.last = Some(now);
        true
    }
}

/// When a connection must have done something by, and what it failed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// Its first request.
    FirstMessage(Instant),
    /// Subscribe and authorize.
    Handshake(Instant),
    /// Any request.
    Idle(Instant),
}

impl Deadline {
    /// The time.
    pub fn at(self) -> Instant {
        match self {
            Deadline::FirstMessage(t) | Deadline::Handshake(t) | Deadline::Idle(t) => t,
        }
    }
}

/// The timeouts of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// For the first request.
    pub first_message: Duration,
    /// For subscribe and authorize, from connecting.
    pub handshake: Duration,
    /// Between requests.
    pub idle: Duration,
}

/// The next deadline of a connection opened at `connected`, whose last request (if any) came
/// at `last_request`, mining or not yet. The handshake deadline runs from connecting, whatever
/// came before it: a first message due later does not put it off.
pub(super) fn deadline(
    t: Timeouts,
    connected: Instant,
    last_request: Option<Instant>,
    mining: bool,
) -> Deadline {
    let handshake = connected + t.handshake;
    let Some(last) = last_request else {
        let first = connected + t.first_message;
        if handshake < first {
            return Deadline::Handshake(handshake);
        }
        return Deadline::FirstMessage(first);
    };
    let idle = last + t.idle;
    if !mining && handshake < idle {
        return Deadline::Handshake(handshake);
    }
    Deadline::Idle(idle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut b = Budget::new(10, start);
        let burst = (0..100).take_while(|_| b.spend(start)).count();
        assert_eq!(burst, 50, "five seconds' worth at once");
        assert!(!b.spend(start));
        assert!(
            b.spend(start + Duration::from_millis(100)),
            "one more every 100 ms"
        );
        assert!(!b.spend(start + Duration::from_millis(100)));
    }

    #[test]
    fn suggestions_are_honoured_at_most_every_interval() {
        let start = Instant::now();
        let mut s = Suggestions::default();
        assert!(s.allow(start));
        assert!(!s.allow(start + Duration::from_secs(1)));
        assert!(!s.allow(start + Duration::from_secs(9)));
        assert_eq!(s.ignored, 2);
        assert!(s.allow(start + SUGGEST_INTERVAL));
    }

    #[test]
    fn only_requests_push_deadlines_back_and_the_handshake_has_its_own() {
        let t = Timeouts {
            first_message: Duration::from_secs(30),
            handshake: Duration::from_secs(60),
            idle: Duration::from_secs(900),
        };
        let c = Instant::now();
        assert_eq!(
            deadline(t, c, None, false),
            Deadline::FirstMessage(c + t.first_message)
        );
        // Talking without subscribing and authorizing does not buy time past the handshake.
        let late = c + Duration::from_secs(59);
        assert_eq!(
            deadline(t, c, Some(late), false),
            Deadline::Handshake(c + t.handshake)
        );
        assert_eq!(
            deadline(t, c, Some(late), true),
            Deadline::Idle(late + t.idle)
        );
        // A handshake shorter than the first-message timeout holds before any request too:
        // lines that are not requests we serve (unknown methods, replies) buy no time.
        let short = Timeouts {
            handshake: Duration::from_secs(2),
            ..t
        };
        assert_eq!(
            deadline(short, c, None, false),
            Deadline::Handshake(c + short.handshake)
        );
    }
}
