//! Ids that travel between peers, each its own type: ours, the pool's and the provider's never
//! mix.

use std::fmt;

/// A job's number as miners see it: lower-case hex in `mining.notify`, and the request id of
/// its `SetCustomMiningJob` in pool mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(u32);

impl JobId {
    /// Wraps a raw id.
    pub const fn new(raw: u32) -> Self {
        JobId(raw)
    }

    /// The raw number.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The id after this one, skipping zero (some firmware treats job 0 as "no job").
    #[must_use]
    pub const fn next(self) -> JobId {
        match self.0.wrapping_add(1) {
            0 => JobId(1),
            n => JobId(n),
        }
    }

    /// Parses the id a miner echoes back; `None` for anything we never sent.
    pub fn parse(s: &str) -> Option<JobId> {
        if s.is_empty() || s.len() > 8 {
            return None;
        }
        u32::from_str_radix(s, 16).ok().map(JobId)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// An SV2 mining channel, as the pool numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelId(pub u32);

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A job id the pool gave: the answer to `SetCustomMiningJob`, or the id of one of its own
/// jobs. Shares on our job go up under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolJobId(pub u32);

impl fmt::Display for PoolJobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A template's number, increasing with time within one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TemplateId(u64);

impl TemplateId {
    /// Wraps a raw id (a source hands them out in order).
    pub const fn new(raw: u64) -> Self {
        TemplateId(raw)
    }

    /// The raw number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for TemplateId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_round_trip_and_reject_garbage() {
        let id = JobId::new(0xdead_beef);
        assert_eq!(JobId::parse(&id.to_string()), Some(id));
        assert_eq!(JobId::parse("1a"), Some(JobId::new(0x1a)));
        for bad in ["", "xyz", "123456789", "-1"] {
            assert_eq!(JobId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn job_ids_skip_zero_when_they_wrap() {
        assert_eq!(JobId::new(u32::MAX).next(), JobId::new(1));
        assert_eq!(JobId::new(7).next(), JobId::new(8));
    }
}
