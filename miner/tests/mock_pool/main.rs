//! Runs miners of every dialect against a tiny in-test Stratum V1 pool on 127.0.0.1:0 and
//! checks their handshakes and that their shares rebuild to hashes under the share target.

mod pool;

use pool::{expected_methods, next_event, start, Conn, PoolJob, EN1, POOL_MASK, STEP};
use serde_json::json;
use std::time::{Duration, Instant};
use sv1_miner::{share_target, spawn, Dialect, MinerConfig, MinerEvent};
use tokio::net::TcpListener;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

async fn one_dialect_mines(dialect: Dialect) {
    let (listener, mut miner, shutdown) = start(dialect).await;
    let mut conn = Conn::accept(&listener).await;
    let (methods, mask) = conn.handshake().await;
    assert_eq!(methods, expected_methods(dialect), "{dialect} handshake");
    assert_eq!(mask.is_some(), dialect.requests_version_rolling());

    let job = PoolJob::new("1", 0x11);
    conn.send(json!({"id": null, "method": "mining.set_difficulty", "params": [1e-9]}))
        .await;
    conn.send(job.notify(true)).await;
    let target = share_target(1e-9);
    for _ in 0..3 {
        let submit = conn.next_submit().await;
        let p = submit["params"].as_array().unwrap();
        assert_eq!(p[0], format!("{dialect}.worker"));
        assert_eq!(p[1], "1");
        assert_eq!(
            p[2].as_str().unwrap().len(),
            8,
            "extranonce2 keeps its size"
        );
        if dialect == Dialect::Whatsminer {
            // No zero padding on u32 fields (the version bits, at least, are small numbers).
            assert!(p[5].as_str().unwrap().len() < 8, "{p:?}");
        } else {
            assert!(
                p[3..].iter().all(|f| f.as_str().unwrap().len() == 8),
                "{p:?}"
            );
        }
        if dialect == Dialect::Avalon {
            assert!(submit["id"].is_string());
        } else {
            assert!(submit["id"].is_u64());
        }
        let hash = job.check_submit(&EN1, p, mask);
        assert!(
            target.is_met_by(hash),
            "{dialect}: share {hash} above target"
        );
        conn.reply(&submit, json!(true)).await;
    }
    let ev = next_event(&mut miner, |e| matches!(e, MinerEvent::ShareResult { .. })).await;
    assert!(
        matches!(
            ev,
            MinerEvent::ShareResult {
                accepted: true,
                reason: None,
                ..
            }
        ),
        "{ev:?}"
    );
    let s = miner.stats.snapshot();
    assert!(
        s.shares_submitted >= 3 && s.notifies == 1 && s.clean_notifies == 1 && s.authorized,
        "{s:?}"
    );
    shutdown.cancel();
    let ev = next_event(&mut miner, |e| matches!(e, MinerEvent::Disconnected { .. })).await;
    assert!(
        matches!(ev, MinerEvent::Disconnected { ref reason } if reason == "shutdown"),
        "{ev:?}"
    );
    timeout(STEP, miner.task).await.unwrap().unwrap();
}

#[tokio::test]
async fn every_dialect_handshakes_and_submits_valid_shares() {
    timeout(Duration::from_secs(120), async {
        let mut set = tokio::task::JoinSet::new();
        for d in Dialect::ALL {
            set.spawn(one_dialect_mines(d));
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn events_report_handshake_job_and_rejections() {
    timeout(Duration::from_secs(60), async {
        let (listener, mut miner, _shutdown) = start(Dialect::Cgminer).await;
        let mut conn = Conn::accept(&listener).await;
        conn.handshake().await;
        let job = PoolJob::new("j7", 0x42);
        conn.send(json!({"id": null, "method": "mining.set_difficulty", "params": [1e-9]})).await;
        conn.send(job.notify(true)).await;
        let submit = conn.next_submit().await;
        conn.send(json!({"id": submit["id"], "result": null, "error": [23, "Low difficulty share", null]})).await;

        let ev = next_event(&mut miner, |_| true).await;
        assert!(matches!(ev, MinerEvent::Configured { version_mask: Some(POOL_MASK) }), "{ev:?}");
        let ev = next_event(&mut miner, |_| true).await;
        assert!(matches!(ev, MinerEvent::Subscribed { ref extranonce1, extranonce2_size: 4 } if extranonce1[..] == EN1), "{ev:?}");
        let ev = next_event(&mut miner, |_| true).await;
        assert!(matches!(ev, MinerEvent::Difficulty(d) if d == 1e-9), "{ev:?}");
        let ev = next_event(&mut miner, |_| true).await;
        match ev {
            MinerEvent::Notify { job_id, prevhash, clean, .. } => {
                assert_eq!(job_id, "j7");
                assert_eq!(prevhash, job.prevhash);
                assert!(clean);
            }
            other => panic!("{other:?}"),
        }
        let ev = next_event(&mut miner, |_| true).await;
        match ev {
            MinerEvent::ShareSubmitted { job_id, block_hash } => {
                assert_eq!(job_id, "j7");
                let p = submit["params"].as_array().unwrap();
                assert_eq!(block_hash, job.check_submit(&EN1, p, Some(POOL_MASK)));
            }
            other => panic!("{other:?}"),
        }
        let ev = next_event(&mut miner, |e| matches!(e, MinerEvent::ShareResult { .. })).await;
        assert!(
            matches!(ev, MinerEvent::ShareResult { accepted: false, reason: Some(ref r), .. } if r == "Low difficulty share"),
            "{ev:?}"
        );
        assert!(miner.stats.snapshot().shares_rejected >= 1);

        // The server going away ends the miner.
        drop(conn);
        let ev = next_event(&mut miner, |e| matches!(e, MinerEvent::Disconnected { .. })).await;
        assert!(matches!(ev, MinerEvent::Disconnected { ref reason } if reason != "shutdown"), "{ev:?}");
        timeout(STEP, miner.task).await.unwrap().unwrap();
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn clean_jobs_extranonce_difficulty_and_junk() {
    timeout(Duration::from_secs(60), async {
        let (listener, miner, shutdown) = start(Dialect::Bitaxe).await;
        let mut conn = Conn::accept(&listener).await;
        let (_, mask) = conn.handshake().await;
        assert_eq!(mask, Some(POOL_MASK), "bitaxe asks ffffffff; the pool ANDs it down");

        let job1 = PoolJob::new("1", 1);
        conn.send(json!({"id": null, "method": "mining.set_difficulty", "params": [1e-9]})).await;
        conn.send(job1.notify(true)).await;
        conn.next_submit().await;

        // Junk must be ignored: unknown notification, unknown server request, garbage, stray reply.
        conn.send(json!({"id": null, "method": "mining.something_new", "params": [1, 2]})).await;
        conn.send(json!({"id": 99, "method": "client.unknown_request", "params": []})).await;
        conn.send_raw("this is not json").await;
        conn.send(json!({"id": 12345, "result": true, "error": null})).await;
        conn.send(json!({"id": null, "method": "client.show_message", "params": ["hello"]})).await;

        // A new difficulty alone changes nothing until the next notify: job 1 shares keep coming.
        conn.send(json!({"id": null, "method": "mining.set_difficulty", "params": [1e12]})).await;
        conn.send(json!({"id": 7, "method": "client.get_version", "params": []})).await;
        let mut saw_version_reply = false;
        let mut job1_after = 0;
        while job1_after < 3 || !saw_version_reply {
            let msg = conn.recv().await;
            if msg["id"] == 7 && msg.get("method").is_none() {
                assert_eq!(msg["result"], "bitaxe/BM1366/v2.4.0");
                saw_version_reply = true;
            } else if msg["method"] == "mining.submit" {
                assert_eq!(msg["params"][1], "1");
                let hash = job1.check_submit(&EN1, msg["params"].as_array().unwrap(), mask);
                assert!(share_target(1e-9).is_met_by(hash));
                job1_after += 1;
            }
        }

        // A clean job at difficulty 1e12 (out of reach): no job-1 share may follow once it is
        // taken, and none for job 2 either.
        conn.send(PoolJob::new("2", 2).notify(true)).await;
        let t0 = Instant::now();
        // Drain what was in flight before the notify reached the miner.
        while let Some(msg) = conn.recv_within(Duration::from_millis(300)).await {
            assert_eq!(msg["params"][1], "1", "no job-2 share at difficulty 1e12");
            assert!(t0.elapsed() < Duration::from_secs(2), "job 1 shares keep coming after a clean notify");
        }

        // set_extranonce applies from the next notify on; a clean job 3 at 1e-9 mines with it.
        let en1b = [0xca, 0xfe];
        conn.send(json!({"id": null, "method": "mining.set_extranonce", "params": [hex::encode(en1b), 2]})).await;
        conn.send(json!({"id": null, "method": "mining.set_difficulty", "params": [1e-9]})).await;
        let job3 = PoolJob::new("3", 3);
        conn.send(job3.notify(true)).await;
        let t_notify = Instant::now();
        let submit = conn.next_submit().await;
        assert!(t_notify.elapsed() < Duration::from_secs(5));
        let p = submit["params"].as_array().unwrap();
        assert_eq!(p[1], "3");
        assert_eq!(p[2].as_str().unwrap().len(), 4, "new extranonce2 size");
        assert!(share_target(1e-9).is_met_by(job3.check_submit(&en1b, p, mask)));

        let s = miner.stats.snapshot();
        assert_eq!(s.unknown_messages, 4, "{s:?}");
        assert_eq!((s.notifies, s.clean_notifies), (3, 3));
        assert!(s.hashes > 0);
        shutdown.cancel();
        timeout(STEP, miner.task).await.unwrap().unwrap();
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn cgminer_waits_for_configure_but_whatsminer_pipelines() {
    timeout(Duration::from_secs(30), async {
        for (dialect, waits) in [
            (Dialect::Cgminer, true),
            (Dialect::Whatsminer, false),
            (Dialect::Braiins, true),
        ] {
            let (listener, _miner, shutdown) = start(dialect).await;
            let mut conn = Conn::accept(&listener).await;
            let configure = conn.recv().await;
            assert_eq!(configure["method"], "mining.configure");
            let next = conn.recv_within(Duration::from_millis(400)).await;
            if waits {
                assert!(
                    next.is_none(),
                    "{dialect} must wait for the configure reply, sent {next:?}"
                );
                conn.reply(&configure, json!({"version-rolling": false}))
                    .await;
                assert_eq!(conn.recv().await["method"], "mining.subscribe");
            } else {
                // Pipelined: the subscribe follows at once (allow for a loaded machine).
                let next = match next {
                    Some(n) => Some(n),
                    None => conn.recv_within(Duration::from_secs(3)).await,
                };
                let next = next.expect("whatsminer must not wait for the configure reply");
                assert_eq!(next["method"], "mining.subscribe");
            }
            shutdown.cancel();
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn no_rolling_granted_means_five_params_and_bind_ip_is_used() {
    timeout(Duration::from_secs(30), async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shutdown = CancellationToken::new();
        let config = MinerConfig::new(listener.local_addr().unwrap(), "w", Dialect::Braiins)
            .with_suggest_difficulty(1e-6)
            .with_max_hashrate(2000.0)
            .with_bind_ip("127.0.0.3".parse().unwrap());
        let miner = spawn(config, shutdown.clone());
        let mut conn = Conn::accept(&listener).await;
        assert_eq!(conn.peer.ip().to_string(), "127.0.0.3");
        let configure = conn.recv().await;
        assert_eq!(
            configure["params"][1]["minimum-difficulty.value"],
            json!(1e-6)
        );
        conn.send(
            json!({"id": configure["id"], "result": null, "error": [20, "Unsupported", null]}),
        )
        .await;
        let (methods, _) = conn.handshake().await;
        assert_eq!(methods, vec!["mining.subscribe", "mining.authorize"]);
        let job = PoolJob::new("x", 9);
        conn.send(json!({"id": null, "method": "mining.set_difficulty", "params": [1e-9]}))
            .await;
        conn.send(job.notify(false)).await;
        let submit = conn.next_submit().await;
        assert!(share_target(1e-9).is_met_by(job.check_submit(
            &EN1,
            submit["params"].as_array().unwrap(),
            None
        )));
        shutdown.cancel();
        timeout(STEP, miner.task).await.unwrap().unwrap();
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn connection_refused_and_oversized_lines_disconnect() {
    timeout(Duration::from_secs(30), async {
        // Nothing listens on a just-closed port.
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        let mut miner = spawn(
            MinerConfig::new(addr, "w", Dialect::Avalon),
            CancellationToken::new(),
        );
        let ev = next_event(&mut miner, |_| true).await;
        assert!(
            matches!(ev, MinerEvent::Disconnected { ref reason } if reason.contains("connect")),
            "{ev:?}"
        );

        let (listener, mut miner, _shutdown) = start(Dialect::Nerdminer).await;
        let mut conn = Conn::accept(&listener).await;
        conn.recv().await;
        conn.send_raw(&"x".repeat(sv1_miner::MAX_LINE_LEN + 10))
            .await;
        let ev = next_event(&mut miner, |e| matches!(e, MinerEvent::Disconnected { .. })).await;
        assert!(
            matches!(ev, MinerEvent::Disconnected { ref reason } if reason.contains("longer")),
            "{ev:?}"
        );
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn idle_miner_follows_jobs_without_hashing() {
    timeout(Duration::from_secs(30), async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shutdown = CancellationToken::new();
        let config = MinerConfig::new(listener.local_addr().unwrap(), "idle", Dialect::Whatsminer)
            .with_max_hashrate(0.0);
        let mut miner = spawn(config, shutdown.clone());
        let mut conn = Conn::accept(&listener).await;
        conn.handshake().await;
        conn.send(json!({"id": null, "method": "mining.set_difficulty", "params": [1e-9]}))
            .await;
        conn.send(PoolJob::new("1", 1).notify(true)).await;
        next_event(&mut miner, |e| matches!(e, MinerEvent::Notify { .. })).await;
        assert!(conn.recv_within(Duration::from_millis(300)).await.is_none());
        let s = miner.stats.snapshot();
        assert_eq!((s.hashes, s.shares_submitted, s.notifies), (0, 0, 1));
        shutdown.cancel();
        timeout(STEP, miner.task).await.unwrap().unwrap();
    })
    .await
    .expect("test timed out");
}
