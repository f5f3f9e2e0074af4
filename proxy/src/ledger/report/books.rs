//! `ledger report`: the farm's books for a period. Who did what work (worker, customer,
//! gateway), and, hour by hour and day by day, the farm's validated work beside what the pool
//! acknowledged and refused. Pure: built from the ledger's rows.

use std::collections::BTreeMap;

use ledger::{AckBucket, Block, RefusalBucket, WorkBucket};
use ledger_math::CustomerMap;
use serde::Serialize;

use super::Span;

/// One worker over the period, all gateways.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerLine {
    /// The worker.
    pub worker: String,
    /// Its customer.
    pub customer: String,
    /// Shares accepted by the gateway.
    pub shares: i64,
    /// Their summed difficulty.
    pub work: f64,
    /// Shares the gateway refused.
    pub rejects: i64,
}

/// One customer over the period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CustomerLine {
    /// The customer.
    pub customer: String,
    /// Workers seen.
    pub workers: usize,
    /// Shares accepted.
    pub shares: i64,
    /// Their summed difficulty.
    pub work: f64,
    /// The customer's fraction of the farm's work.
    pub share: f64,
}

/// One gateway over the period: its work and what the pools said of its shares.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GatewayLine {
    /// The gateway.
    pub gateway: String,
    /// Shares accepted.
    pub shares: i64,
    /// Their summed difficulty.
    pub work: f64,
    /// Shares refused by the gateway.
    pub rejects: i64,
    /// Shares the pools accepted.
    pub pool_accepted: i64,
    /// The pools' `new_shares_sum`, summed.
    pub pool_shares_sum: i64,
    /// Shares the pools refused.
    pub pool_refused: i64,
}

/// An hour or a day: the farm's validated work against the pool's acknowledgements.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TimeLine {
    /// Unix seconds at its start.
    pub start: i64,
    /// Shares the gateways accepted.
    pub shares: i64,
    /// Their summed difficulty: the farm's validated work.
    pub work: f64,
    /// Shares the pools accepted (`new_submits_accepted_count`).
    pub pool_accepted: i64,
    /// The pools' acknowledged work (`new_shares_sum`).
    pub pool_shares_sum: i64,
    /// Shares the pools refused.
    pub pool_refused: i64,
}

/// Refusals by pool and reason over the period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RefusalLine {
    /// The pool.
    pub pool: String,
    /// Its error code.
    pub reason: String,
    /// How many.
    pub count: i64,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Unix seconds, first in.
    pub from: i64,
    /// Unix seconds, first out.
    pub to: i64,
    /// By worker name.
    pub workers: Vec<WorkerLine>,
    /// By customer name.
    pub customers: Vec<CustomerLine>,
    /// By gateway name.
    pub gateways: Vec<GatewayLine>,
    /// Hour by hour.
    pub hours: Vec<TimeLine>,
    /// Day by day (UTC).
    pub days: Vec<TimeLine>,
    /// The pools' refusals.
    pub refusals: Vec<RefusalLine>,
    /// Blocks found, with their fates.
    pub blocks: Vec<Block>,
}

/// What a report is built from.
#[derive(Debug, Default)]
pub struct Rows {
    /// Work rows.
    pub work: Vec<WorkBucket>,
    /// Acknowledgement rows.
    pub acks: Vec<AckBucket>,
    /// Refusal rows.
    pub refusals: Vec<RefusalBucket>,
    /// Blocks.
    pub blocks: Vec<Block>,
}

/// The customer of a row: as recorded with the work, or by today's rules when `remap` (or
/// when none was recorded).
pub fn customer_of(row: &WorkBucket, customers: &CustomerMap, remap: bool) -> String {
    match (&row.customer, remap) {
        (Some(c), false) => c.clone(),
        _ => customers.customer_of(&row.worker).to_string(),
    }
}

impl Report {
    /// Builds the report for `span` from its rows.
    pub fn build(span: Span, rows: Rows, customers: &CustomerMap, remap: bool) -> Report {
        let mut workers: BTreeMap<&str, WorkerLine> = BTreeMap::new();
        let mut gateways: BTreeMap<String, GatewayLine> = BTreeMap::new();
        for r in &rows.work {
            let w = workers.entry(&r.worker).or_insert_with(|| WorkerLine {
                worker: r.worker.clone(),
                customer: customer_of(r, customers, remap),
                shares: 0,
                work: 0.0,
                rejects: 0,
            });
            (w.shares, w.work, w.rejects) =
                (w.shares + r.shares, w.work + r.work, w.rejects + r.rejects);
            let g = gateway(&mut gateways, &r.gateway);
            (g.shares, g.work, g.rejects) =
                (g.shares + r.shares, g.work + r.work, g.rejects + r.rejects);
        }
        for a in &rows.acks {
            let g = gateway(&mut gateways, &a.gateway);
            g.pool_accepted += a.accepted;
            g.pool_shares_sum = g.pool_shares_sum.saturating_add(a.shares_sum);
            g.pool_refused += a.refused;
        }
        let workers: Vec<WorkerLine> = workers.into_values().collect();
        Report {
            from: span.from.unix(),
            to: span.to.unix(),
            customers: by_customer(&workers),
            workers,
            gateways: gateways.into_values().collect(),
            hours: timeline(&rows, 3600),
            days: timeline(&rows, 86_400),
            refusals: refusals(&rows.refusals),
            blocks: rows.blocks,
        }
    }
}

fn gateway<'m>(map: &'m mut BTreeMap<String, GatewayLine>, name: &str) -> &'m mut GatewayLine {
    map.entry(name.to_owned()).or_insert_with(|| GatewayLine {
        gateway: name.to_owned(),
        ..GatewayLine::default()
    })
}

fn by_customer(workers: &[WorkerLine]) -> Vec<CustomerLine> {
    let total: f64 = workers.iter().map(|w| w.work).sum();
    let mut map: BTreeMap<&str, CustomerLine> = BTreeMap::new();
    for w in workers {
        let c = map.entry(&w.customer).or_insert_with(|| CustomerLine {
            customer: w.customer.clone(),
            workers: 0,
            shares: 0,
            work: 0.0,
            share: 0.0,
        });
        c.workers += 1;
        c.shares += w.shares;
        c.work += w.work;
    }
    let mut lines: Vec<CustomerLine> = map.into_values().collect();
    for c in &mut lines {
        c.share = if total > 0.0 { c.work / total } else { 0.0 };
    }
    lines
}

/// Work and acknowledgements in slots of `secs` (an hour, a day), in time order.
fn timeline(rows: &Rows, secs: i64) -> Vec<TimeLine> {
    let mut slots: BTreeMap<i64, TimeLine> = BTreeMap::new();
    for r in &rows.work {
        let start = r.bucket_start.div_euclid(secs) * secs;
        let s = slots.entry(start).or_insert_with(|| TimeLine {
            start,
            ..TimeLine::default()
        });
        s.shares += r.shares;
        s.work += r.work;
    }
    for a in &rows.acks {
        let start = a.bucket_start.div_euclid(secs) * secs;
        let s = slots.entry(start).or_insert_with(|| TimeLine {
            start,
            ..TimeLine::default()
        });
        s.pool_accepted += a.accepted;
        s.pool_shares_sum = s.pool_shares_sum.saturating_add(a.shares_sum);
        s.pool_refused += a.refused;
    }
    slots.into_values().collect()
}

fn refusals(rows: &[RefusalBucket]) -> Vec<RefusalLine> {
    let mut map: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for r in rows {
        *map.entry((&r.pool, &r.reason)).or_default() += r.count;
    }
    map.into_iter()
        .map(|((pool, reason), count)| RefusalLine {
            pool: pool.to_owned(),
            reason: reason.to_owned(),
            count,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use ledger_math::{CustomerRule, Timestamp};

    use super::*;

    fn work(
        gateway: &str,
        start: i64,
        worker: &str,
        customer: Option<&str>,
        shares: i64,
    ) -> WorkBucket {
        WorkBucket {
            gateway: gateway.into(),
            bucket_start: start,
            worker: worker.into(),
            customer: customer.map(Into::into),
            shares,
            work: shares as f64 * 2.0,
            rejects: 1,
        }
    }

    fn map() -> CustomerMap {
        let rule = CustomerRule {
            pattern: "alice.*".into(),
            customer: "alice".into(),
        };
        CustomerMap::new(&[rule], "farm").unwrap()
    }

    fn span() -> Span {
        Span {
            from: Timestamp::from_unix(0),
            to: Timestamp::from_unix(2 * 86_400),
        }
    }

    #[test]
    fn work_adds_up_by_worker_customer_gateway_hour_and_day() {
        let rows = Rows {
            work: vec![
                work("g1", 0, "alice.1", Some("alice"), 3),
                work("g2", 60, "alice.1", Some("alice"), 2),
                work("g1", 3600, "bob", None, 5),
                work("g1", 86_400, "bob", None, 1),
            ],
            acks: vec![AckBucket {
                gateway: "g1".into(),
                bucket_start: 60,
                pool: "p".into(),
                accepted: 4,
                shares_sum: 40,
                refused: 1,
            }],
            ..Rows::default()
        };
        let r = Report::build(span(), rows, &map(), false);
        assert_eq!(r.workers.len(), 2);
        assert_eq!(
            (
                r.workers[0].worker.as_str(),
                r.workers[0].shares,
                r.workers[0].work
            ),
            ("alice.1", 5, 10.0)
        );
        assert_eq!(
            r.workers[1].customer, "farm",
            "no customer recorded: today's rules"
        );
        assert_eq!(
            r.customers.iter().map(|c| c.shares).collect::<Vec<_>>(),
            vec![5, 6]
        );
        assert!((r.customers.iter().map(|c| c.share).sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(r.gateways[0].shares, 9);
        assert_eq!(
            (r.gateways[0].pool_accepted, r.gateways[0].pool_shares_sum),
            (4, 40)
        );
        assert_eq!(r.hours.len(), 3);
        assert_eq!((r.hours[0].shares, r.hours[0].pool_accepted), (5, 4));
        assert_eq!(r.days.len(), 2);
        assert_eq!(r.days[0].shares, 10);
        let total: i64 = r.workers.iter().map(|w| w.shares).sum();
        assert_eq!(total, r.days.iter().map(|d| d.shares).sum::<i64>());
    }

    #[test]
    fn remapping_uses_todays_rules() {
        let rows = Rows {
            work: vec![work("g", 0, "alice.1", Some("old-owner"), 1)],
            ..Rows::default()
        };
        let kept = Report::build(
            span(),
            Rows {
                work: rows.work.clone(),
                ..Rows::default()
            },
            &map(),
            false,
        );
        assert_eq!(kept.customers[0].customer, "old-owner");
        let remapped = Report::build(span(), rows, &map(), true);
        assert_eq!(remapped.customers[0].customer, "alice");
    }
}
