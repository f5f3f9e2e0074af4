use serde_json::json;

use super::*;

const NOW: u64 = 1_748_779_203; // 2025-06-01 12:00:03 UTC

fn summary() -> Value {
    json!({
        "version": "0.1.0", "started_at": NOW - 11_520, "uptime_secs": 11_520,
        "connections": 415, "miners": 412,
        "hashrate": {"h5m": 1.234e15, "h1h": 1.21e15, "h24h": 1.19e15},
        "totals": {"accepted": 9958, "work": 1.0e9,
                   "rejected": {"stale_job": 30, "duplicate": 12, "above_target": 0},
                   "last_share": NOW - 2},
        "upstream": {"mode": "declared", "pool": "main-pool", "since": NOW - 3720},
        "template": {"height": 880_123, "fees_sat": 12_345_678, "txs": 3412, "weight": 3_998_120,
                     "age_secs": 4, "kind": "full", "node": "core-1"},
        "blocks_found": 2,
        "node": {"serving": "core-1", "down_since": null}
    })
}

fn workers() -> Value {
    let w = |name: &str, connected: u64, h5m: f64, accepted: u64, last: u64| {
        json!({"worker": name, "connected": connected,
               "rates": {"h5m": h5m, "h1h": h5m, "h24h": h5m},
               "totals": {"accepted": accepted, "work": 1.0, "rejected": {"stale_job": 1}, "last_share": last}})
    };
    json!([
        w("farm.rack1.s19-01", 1, 110e12, 5000, NOW - 5),
        w("farm.rack1.s21-02", 1, 200e12, 4000, NOW - 1),
        w("farm.rack9.s21-04", 1, 0.0, 900, NOW - 840),
        w("farm.rack2.new", 1, 0.0, 0, 0),
        w("farm.gone", 0, 0.0, 58, NOW - 90_000),
    ])
}

#[test]
fn the_summary_names_mode_pool_rates_and_shares() {
    let s = summary();
    let u = json!({"mode": "declared", "pool": "main-pool", "since": NOW - 3720,
        "failovers": {"timeout": 1}, "declarations": {"sent": 812, "accepted": 810, "refused": {"invalid-job": 2}},
        "pool_shares": {"submitted": 10_000, "accepted": 9_981, "rejected": 19, "dropped": 0},
        "work": {"validated": 1.0, "acknowledged": 1.0}});
    let w = workers();
    let text = render(
        "http://127.0.0.1:9100",
        Answers {
            summary: &s,
            upstream: Some(&u),
            workers: Some(&w),
        },
        NOW,
        2,
    );
    for want in [
        "jd-proxy 0.1.0 at http://127.0.0.1:9100, up 3h 12m",
        "Mining     the farm's templates for pool main-pool (declared jobs) since 2025-06-01 10:58:03 UTC (1h 02m)",
        "Node       core-1 serves the templates",
        "Hashrate   1.23 PH/s (5 min)   1.21 PH/s (1 h)   1.19 PH/s (24 h)",
        "Miners     412 mining, 415 connections",
        "Shares     9,958 accepted, 0.42% rejected (stale_job 30, duplicate 12); last 2s ago",
        "Template   height 880,123, fees 0.12345678 BTC, 3,412 txs, weight 3,998,120, 4s old (full, from core-1)",
        "Blocks     2 found",
        "Upstream   failovers 1 (timeout 1); declarations 812 sent, 810 accepted, 2 refused (invalid-job 2); pool shares 99.81% accepted of 10,000, 0 dropped",
        "Top workers by 5-min hashrate (5 workers, 4 connected):",
        "Silent: 2 connected workers without a share for 10 min:",
        "  farm.rack2.new           no share yet",
        "  farm.rack9.s21-04        last share 14m 00s ago",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    // The fastest first, two of them; the worker with no ASIC left is not silent.
    let first = text.find("farm.rack1.s21-02").unwrap();
    let second = text.find("farm.rack1.s19-01").unwrap();
    assert!(first < second, "{text}");
    assert!(text.contains("200 TH/s"), "{text}");
    assert!(!text.contains("farm.gone"), "{text}");
}

#[test]
fn what_needs_attention_is_said_plainly() {
    let mut s = summary();
    s["upstream"] = json!({"mode": "pool_jobs", "pool": "backup", "since": NOW - 60});
    s["node"] = json!({"serving": null, "down_since": NOW - 300});
    s["totals"]["last_share"] = json!(0);
    let text = render(
        "x",
        Answers {
            summary: &s,
            upstream: None,
            workers: None,
        },
        NOW,
        5,
    );
    assert!(
        text.contains("Mining     the pool's own jobs from backup, NOT the farm's templates since"),
        "{text}"
    );
    assert!(
        text.contains("NO NODE ANSWERS since 2025-06-01 11:55:03 UTC (5m 00s)"),
        "{text}"
    );
    assert!(text.contains("; no share yet"), "{text}");
    assert!(
        !text.contains("Upstream"),
        "no upstream answer, no line: {text}"
    );
    let mut s = summary();
    s["upstream"] = json!({"mode": "solo", "pool": null, "since": NOW - 10});
    let solo = json!({"mode": "solo", "pool": null, "failovers": {},
        "declarations": {"sent": 0, "accepted": 0, "refused": {}},
        "pool_shares": {"submitted": 0, "accepted": 0, "rejected": 0, "dropped": 0}});
    let text = render(
        "x",
        Answers {
            summary: &s,
            upstream: Some(&solo),
            workers: None,
        },
        NOW,
        5,
    );
    assert!(
        text.contains("Mining     solo, on the farm's node since"),
        "{text}"
    );
    assert!(
        !text.contains("Upstream"),
        "a solo farm has no pool figures: {text}"
    );
}

#[test]
fn a_sparse_answer_still_renders() {
    let s = json!({"version": "9.9.9"});
    let text = render(
        "x",
        Answers {
            summary: &s,
            upstream: None,
            workers: Some(&json!([])),
        },
        NOW,
        5,
    );
    assert!(text.contains("jd-proxy 9.9.9 at x, up -"), "{text}");
    assert!(
        text.contains("Miners     - mining, - connections"),
        "{text}"
    );
    assert!(text.contains("Silent: none"), "{text}");
}
