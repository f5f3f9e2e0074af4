//! Hostile clients of the work a miner is sent: difficulty suggestions in a loop, a job's
//! duplicate set filled, and shares racing a difficulty change.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use integration_tests::support::binary::{solo_toml, ProxyProcess};
use integration_tests::support::process::free_local_port;
use integration_tests::support::sv1_client::{
    find_shares, loopback, network_target, Exchange, Mining, RawClient, Share,
};
use integration_tests::support::{bounded, init_tracing};
use serde_json::Value;
use sv1_miner::Dialect;
use tokio_util::sync::CancellationToken;

use crate::setup::{
    self, error_code, is_new_job, is_notify, is_reply, is_set_difficulty, reply_at, resends,
    Honest, BUSY, CALM,
};
use crate::{MINES, TEST_TIMEOUT};

/// What `jd_proxy::Proxy::start` logs once it accepts miners.
const SERVING: &str = "jd-proxy serving Stratum V1 miners";
/// What the proxy logs about a miner whose suggestions it ignores (proxy/src/sv1/session.rs).
const SUGGESTIONS_LOGGED: &str = "difficulty suggestions too often";
/// Suggestions honoured at most this often (`SUGGEST_INTERVAL`, session/limits.rs).
const SUGGEST_WINDOW: Duration = Duration::from_secs(10);
/// Suggestions sent in each window: two windows make the 1.3 MB of the issue.
const LOOP: usize = 10_000;
/// Attempts at a step that a new job can spoil (every honest share is a block on regtest).
const ATTEMPTS: usize = 4;

/// `n` suggestions with ids from `first`, alternating between two values, as one write.
fn suggestions(first: u64, n: usize, values: [f64; 2]) -> Vec<u8> {
    (0..n)
        .flat_map(|i| {
            let (id, d) = (first + i as u64, values[i % 2]);
            format!("{{\"id\":{id},\"method\":\"mining.suggest_difficulty\",\"params\":[{d}]}}\n")
                .into_bytes()
        })
        .collect()
}

/// What one window of suggestions drew back.
struct Window {
    bytes_in: usize,
    bytes_back: usize,
    /// Notifies of the publisher's jobs (the honest miner's blocks), not the suggestions' doing.
    jobs: usize,
}

/// Sends a window's suggestions (from `first`, starting with `values[0]`) in one write and
/// checks what comes back: each answered, exactly one honoured (`set_difficulty` to the first
/// value, then the job sent again), nothing else but the publisher's new jobs.
async fn suggest_window(c: &mut RawClient, first: u64, values: [f64; 2]) -> anyhow::Result<Window> {
    let bytes = suggestions(first, LOOP, values);
    let last = first + LOOP as u64 - 1;
    let got = c
        .exchange(&bytes, Duration::from_secs(20), |v| is_reply(v, last))
        .await?;
    anyhow::ensure!(got.closed.is_none(), "the suggesting miner stays connected");
    let replies = got.lines.iter().filter(|v| v["result"] == true).count();
    anyhow::ensure!(replies == LOOP, "every suggestion is answered: {replies}");
    let set: Vec<usize> = positions(&got, is_set_difficulty);
    anyhow::ensure!(
        set.len() == 1,
        "one suggestion a window is honoured: {}",
        set.len()
    );
    anyhow::ensure!(got.lines[set[0]]["params"][0].as_f64() == Some(values[0]));
    // Then the job in force again, not clean; every other notify is a job from the publisher
    // (new tips, new templates), none sent again for this miner.
    let resent = positions(&got, setup::is_resend);
    anyhow::ensure!(resent == [set[0] + 1], "one job sent again: {resent:?}");
    anyhow::ensure!(got.lines[resent[0]]["params"][8] == false, "not clean");
    let jobs = positions(&got, is_notify).len() - 1;
    Ok(Window {
        bytes_in: bytes.len(),
        bytes_back: got.bytes,
        jobs,
    })
}

/// Where in what came back the lines `pred` accepts are.
fn positions(got: &Exchange, pred: fn(&Value) -> bool) -> Vec<usize> {
    (0..got.lines.len())
        .filter(|&i| pred(&got.lines[i]))
        .collect()
}

/// `mining.suggest_difficulty` in a loop, alternating two values (the issue: 1.3 MB of them drew
/// 4.7 MB of logs and 10.6 MB back). Each is answered, one per 10 s is honoured (a new
/// difficulty and the job sent again), and the proxy logs about it at most once per window.
/// The proxy runs as its own process, to read its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn difficulty_suggestions_in_a_loop_are_paced() {
    bounded(TEST_TIMEOUT, async {
        init_tracing();
        let (node, wallet) = setup::regtest().await?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_local_port()?));
        // The request budget out of the way (the pace of suggestions is under test), and a
        // silent miner's retarget too: only suggestions change this miner's difficulty.
        let toml = solo_toml(
            &node,
            wallet.address(),
            &addr.to_string(),
            "max_requests_per_sec = 10000",
            "",
        );
        anyhow::ensure!(toml.contains("retarget_secs = 5.0"));
        let proxy = ProxyProcess::start(
            &toml.replace("retarget_secs = 5.0", "retarget_secs = 60.0"),
            "",
        )?;
        proxy.wait_for_log(SERVING, Duration::from_secs(20)).await?;
        let stop = CancellationToken::new();
        let honest = Honest::spawn(addr, Dialect::Nerdminer, loopback(1), BUSY, &stop);
        let mined = honest.mines_past(0, MINES).await?;

        let mut c = RawClient::connect_from(addr, loopback(2)).await?;
        c.start_mining("looper.1", None).await?;
        let start = Instant::now();
        let one = suggest_window(&mut c, 100, [1e-4, 2e-4]).await?;
        tokio::time::sleep_until((start + SUGGEST_WINDOW + Duration::from_millis(500)).into())
            .await;
        let two = suggest_window(&mut c, 100 + LOOP as u64, [2e-4, 1e-4]).await?;
        let (bytes_in, back) = (one.bytes_in + two.bytes_in, one.bytes_back + two.bytes_back);
        let log = proxy.log();
        let logged = log.matches(SUGGESTIONS_LOGGED).count();
        let about: usize = log
            .lines()
            .filter(|l| l.contains("127.0.0.2:"))
            .map(|l| l.len() + 1)
            .sum();
        eprintln!(
            "suggestions: {} in two windows, {bytes_in} bytes in; {back} bytes back ({} new jobs \
             among them); {logged} log line(s) about it, {about} log bytes about the peer",
            2 * LOOP,
            one.jobs + two.jobs
        );
        anyhow::ensure!(
            back < bytes_in,
            "less comes back than goes in: {back} for {bytes_in}"
        );
        anyhow::ensure!(
            (1..=2).contains(&logged),
            "logged at most once a window: {logged}"
        );
        anyhow::ensure!(about < 4096, "{about} log bytes about the suggesting miner");
        honest.mines_past(mined, MINES).await?;
        stop.cancel();
        Ok(())
    })
    .await;
}

/// The duplicate set's bound, `MAX_SEEN` in proxy/src/sv1/session/work.rs.
const MAX_SEEN: usize = 1024;
/// A difficulty every hash meets (its target saturates): shares that are not blocks meet it.
const ANY_HASH: f64 = 1e-12;

/// A miner submitting more distinct shares on one job than the proxy remembers for it: when the
/// job's set is full the job is retired (later shares on its id are stale) and sent again under
/// a fresh id; a duplicate is refused as one before and after, and a share accepted before is
/// not accepted again on the fresh id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_duplicate_set_retires_the_job_and_resends_it() {
    bounded(TEST_TIMEOUT, async {
        init_tracing();
        let (node, wallet) = setup::regtest().await?;
        let dir = tempfile::tempdir()?;
        let proxy = setup::proxy(&node, &wallet, dir.path(), |raw| {
            // A thousand shares at once are within the budget.
            raw.stratum.max_requests_per_sec = Some(2_000);
            // Vardiff pinned: the hostile miner stays at the minimum and the honest one at
            // its own minimum-difficulty, so no difficulty change resends the job.
            raw.vardiff.target_share_secs = Some(1e-9);
        })
        .await?;
        let addr = proxy.local_addr();
        let stop = CancellationToken::new();
        let honest = Honest::spawn(addr, Dialect::Braiins, loopback(1), CALM, &stop);
        let mined = honest.mines_past(0, MINES).await?;
        let mut done = None;
        for attempt in 1..=ATTEMPTS {
            done = fill_a_duplicate_set(addr).await?;
            if done.is_some() {
                eprintln!("duplicate set: attempt {attempt}");
                break;
            }
        }
        done.context("a new job came in the middle of every attempt")?;
        honest.mines_past(mined, MINES).await?;
        stop.cancel();
        proxy.shutdown().await;
        Ok(())
    })
    .await;
}

/// One attempt at the duplicate-set test; `None` when a new job came midway.
async fn fill_a_duplicate_set(addr: SocketAddr) -> anyhow::Result<Option<()>> {
    let mut c = RawClient::connect_from(addr, loopback(2)).await?;
    let m = c.start_mining("dup.1", Some(ANY_HASH)).await?;
    anyhow::ensure!(m.difficulty == ANY_HASH, "set to {}", m.difficulty);
    let network = network_target(&m.job);
    let s = find_shares(&m, 0, MAX_SEEN + 1, |h| !network.is_met_by(*h));
    // s0, s0 again (a duplicate), s1..s1023 (the set is full), s1024 and s0 on the full job.
    let plan: Vec<&Share> = [&s[0], &s[0]]
        .into_iter()
        .chain(&s[1..MAX_SEEN])
        .chain([&s[MAX_SEEN], &s[0]])
        .collect();
    let Some(got) = submit(&mut c, &plan, 100).await? else {
        return Ok(None);
    };
    let code = codes(&got, 100, plan.len())?;
    anyhow::ensure!(code[1] == Some(22), "a duplicate is refused as one");
    let accepted = code.iter().filter(|c| c.is_none()).count();
    anyhow::ensure!(accepted == MAX_SEEN, "{accepted} accepted");
    anyhow::ensure!(
        code[MAX_SEEN + 1..] == [Some(21), Some(21)],
        "stale: {:?}",
        &code[MAX_SEEN..]
    );
    // The job comes again, under a fresh id, as the set fills: after the reply to the share
    // before, ahead of the reply to the share that filled it.
    let notifies = positions(&got, is_notify);
    let at = reply_at(&got.lines, 100 + MAX_SEEN as u64)?;
    anyhow::ensure!(
        notifies.len() == 1 && notifies[0] == at - 1,
        "{notifies:?}, reply at {at}"
    );
    let alias = &got.lines[notifies[0]];
    anyhow::ensure!(resends(alias, &m.job), "the same job again: {alias}");
    // On the fresh id: a new share is accepted, the same again refused as a duplicate, and a
    // share accepted before the set was emptied is not accepted again.
    let renewed = Mining {
        job: sv1_miner::Job::from_notify_params(&alias["params"])?,
        ..m.clone()
    };
    let fresh = find_shares(&renewed, 0, 1, |h| !network.is_met_by(*h)).remove(0);
    let replay = s[1].on(&renewed.job.job_id);
    let Some(got) = submit(&mut c, &[&fresh, &fresh, &replay], 5_000).await? else {
        return Ok(None);
    };
    let codes = codes(&got, 5_000, 3)?;
    eprintln!(
        "duplicate set: full after {MAX_SEEN} shares; job sent again as {} (ntime {:x} -> {:x}); \
         fresh, duplicate, replay there: {codes:?}",
        renewed.job.job_id, m.job.ntime, renewed.job.ntime
    );
    anyhow::ensure!(
        codes[..2] == [None, Some(22)],
        "fresh, then a duplicate: {codes:?}"
    );
    // Refused as a duplicate, or as under the ntime floor of a job sent again past its set.
    anyhow::ensure!(
        matches!(codes[2], Some(20 | 22)),
        "a replay is refused: {codes:?}"
    );
    Ok(Some(()))
}

/// Submits `shares` in one write (request ids from `first`) and reads up to the last reply;
/// `None` if a new job came meanwhile (the honest miner found a block): it may have made the
/// shares stale, or be the job a difficulty change sends again.
async fn submit(
    c: &mut RawClient,
    shares: &[&Share],
    first: u64,
) -> anyhow::Result<Option<Exchange>> {
    let lines: String = (first..)
        .zip(shares)
        .map(|(id, s)| s.submit(id, "w") + "\n")
        .collect();
    let last = first + shares.len() as u64 - 1;
    let got = c
        .exchange(lines.as_bytes(), Duration::from_secs(20), |v| {
            is_reply(v, last)
        })
        .await?;
    anyhow::ensure!(got.closed.is_none(), "the connection stays open");
    Ok((!got.lines.iter().any(is_new_job)).then_some(got))
}

/// The error codes of the replies to requests `first..first + n`, in order (`None`: accepted).
fn codes(got: &Exchange, first: u64, n: usize) -> anyhow::Result<Vec<Option<i64>>> {
    (first..first + n as u64)
        .map(|id| Ok(error_code(&got.lines[reply_at(&got.lines, id)?])))
        .collect()
}

/// Quick shares that make vardiff retarget (`FAST_RETARGET_SHARES`, proxy/src/sv1/vardiff.rs).
const FAST_RETARGET_SHARES: usize = 16;
/// The old difficulty of the vardiff test: its target saturates, so every hash meets it, yet
/// sixteen quick shares at it are enough work for vardiff to raise it past the network's.
const OLD_DIFFICULTY: f64 = 2e-10;

/// A new difficulty applies from the next job: when vardiff raises it, `mining.set_difficulty`
/// comes before the notify it applies to; a share on the job already in force is still judged
/// at the difficulty that job was sent with, and the same share on the new job is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_difficulty_applies_from_the_next_notify() {
    bounded(TEST_TIMEOUT, async {
        init_tracing();
        let (node, wallet) = setup::regtest().await?;
        let dir = tempfile::tempdir()?;
        let proxy = setup::proxy(&node, &wallet, dir.path(), |_| {}).await?;
        let addr = proxy.local_addr();
        let stop = CancellationToken::new();
        let honest = Honest::spawn(addr, Dialect::Cgminer, loopback(1), CALM, &stop);
        let mined = honest.mines_past(0, MINES).await?;
        let mut done = None;
        for attempt in 1..=ATTEMPTS {
            done = change_difficulty(addr).await?;
            if done.is_some() {
                eprintln!("difficulty change: attempt {attempt}");
                break;
            }
        }
        done.context("a new job came in the middle of every attempt")?;
        honest.mines_past(mined, MINES).await?;
        stop.cancel();
        proxy.shutdown().await;
        Ok(())
    })
    .await;
}

/// One attempt at the vardiff test; `None` when a new job came midway.
async fn change_difficulty(addr: SocketAddr) -> anyhow::Result<Option<()>> {
    let mut c = RawClient::connect_from(addr, loopback(2)).await?;
    let m = c.start_mining("vd.1", Some(OLD_DIFFICULTY)).await?;
    anyhow::ensure!(m.difficulty == OLD_DIFFICULTY, "set to {}", m.difficulty);
    let network = network_target(&m.job);
    let s = find_shares(&m, 0, FAST_RETARGET_SHARES + 2, |h| !network.is_met_by(*h));
    let quick: Vec<&Share> = s[..FAST_RETARGET_SHARES].iter().collect();
    let Some(got) = submit(&mut c, &quick, 100).await? else {
        return Ok(None);
    };
    anyhow::ensure!(
        codes(&got, 100, quick.len())?.iter().all(Option::is_none),
        "accepted"
    );
    // On the wire: set_difficulty, then the job again under a fresh id, then the last reply.
    let set = positions(&got, is_set_difficulty);
    let notifies = positions(&got, is_notify);
    let last = reply_at(&got.lines, 100 + quick.len() as u64 - 1)?;
    anyhow::ensure!(
        set.len() == 1 && notifies.len() == 1 && set[0] < notifies[0] && notifies[0] < last,
        "set_difficulty {set:?} before the notify {notifies:?} it applies to"
    );
    let new = got.lines[set[0]]["params"][0]
        .as_f64()
        .context("a difficulty")?;
    let alias = &got.lines[notifies[0]];
    anyhow::ensure!(resends(alias, &m.job), "the job again: {alias}");
    let alias = alias["params"][0].as_str().context("job id")?;
    // The same kind of share on each: enough for the old difficulty, not for the new one.
    let new_target = sv1_miner::share_target(new);
    anyhow::ensure!(
        s[16..].iter().all(|x| !new_target.is_met_by(x.hash)),
        "raised to {new}"
    );
    let (old_job, new_job) = (s[16].clone(), s[17].on(alias));
    let Some(got) = submit(&mut c, &[&old_job, &new_job], 200).await? else {
        return Ok(None);
    };
    let verdicts = codes(&got, 200, 2)?;
    eprintln!("vardiff: {OLD_DIFFICULTY} -> {new}; old job, new job: {verdicts:?}");
    anyhow::ensure!(
        verdicts == [None, Some(23)],
        "old job judged at its own difficulty"
    );
    Ok(Some(()))
}
