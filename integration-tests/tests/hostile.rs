//! Hostile clients against jd-proxy on real processes: a regtest Bitcoin Core, the proxy
//! (in-process, or as its own process where its log is read) and raw sockets over loopback
//! doing what broken or malicious clients do. Beside each of them an honest miner of a real
//! firmware dialect keeps getting shares accepted throughout.
//!
//! Loopback is all of 127.0.0.0/8: hostile sockets bind 127.0.0.2 and up, so the honest miners
//! on 127.0.0.1 are another source address. The figures each test prints (bytes back, time to
//! a cut-off) are the ones RELIABILITY.md quotes.

#[path = "hostile/setup.rs"]
mod setup;
#[path = "hostile/work.rs"]
mod work;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context;
use integration_tests::support::sv1_client::{loopback, RawClient};
use integration_tests::support::{bounded, init_tracing, wait_until};
use serde_json::json;
use setup::{error_code, is_reply, Honest, BUSY};
use sv1_miner::Dialect;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

const TEST_TIMEOUT: Duration = Duration::from_secs(55);
/// Long enough for an honest miner's next share.
const MINES: Duration = Duration::from_secs(20);
/// The handshake deadline of the first test.
const HANDSHAKE: Duration = Duration::from_secs(2);
/// Its connection limit, and the connections that try to hold them all.
const SLOTS: usize = 250;
const TALKERS: usize = 300;
/// How much later than the deadline a talker may be closed, on a busy machine.
const LATE: Duration = Duration::from_millis(1_500);

/// Connections that talk but never subscribe and authorize are closed at the handshake
/// deadline, whatever they send: unknown methods, JSON that is not a request, or served
/// requests short of the handshake; none of it buys time. While they hold every free slot a
/// new miner is refused; once they are gone one gets in. Garbage is cut off at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_handshake_are_closed_at_the_deadline() {
    bounded(TEST_TIMEOUT, async {
        init_tracing();
        let (node, wallet) = setup::regtest().await?;
        let dir = tempfile::tempdir()?;
        let proxy = setup::proxy(&node, &wallet, dir.path(), |raw| {
            raw.stratum.handshake_timeout_secs = Some(HANDSHAKE.as_secs());
            // Longer than the handshake: the handshake deadline runs from connecting.
            raw.stratum.first_message_timeout_secs = Some(30);
            raw.stratum.max_connections = Some(SLOTS);
            // The deadline is under test here, not the per-address cap.
            raw.stratum.max_connections_per_ip = Some(0);
        })
        .await?;
        let addr = proxy.local_addr();
        let stop = CancellationToken::new();
        let honest = Honest::spawn(addr, Dialect::Cgminer, loopback(1), BUSY, &stop);
        let mined = honest.mines_past(0, MINES).await?;

        let t = talkers(addr, &proxy).await?;
        let admitted: usize = t.admitted.iter().map(Vec::len).sum();
        anyhow::ensure!(
            t.late_refused,
            "a new connection is refused while the talkers hold every slot"
        );
        anyhow::ensure!(
            admitted == SLOTS - 1 && t.refused == TALKERS - admitted,
            "the honest miner holds one slot, talkers the rest: {admitted} admitted, {} refused",
            t.refused
        );
        for (kind, closed) in t.admitted.iter().enumerate() {
            let worst = closed.iter().max().copied().unwrap_or_default();
            let first = closed.iter().min().copied().unwrap_or_default();
            eprintln!(
                "talkers of kind {kind}: {} closed {first:?}..{worst:?} after connecting",
                closed.len()
            );
            anyhow::ensure!(
                !closed.is_empty() && first >= HANDSHAKE && worst < HANDSHAKE + LATE,
                "kind {kind} is closed at the handshake deadline: {first:?}..{worst:?}"
            );
        }
        // The slots are free again: a new miner gets in and mines.
        let late = Honest::spawn(addr, Dialect::Bitaxe, loopback(1), BUSY, &stop);
        late.mines_past(0, MINES).await?;
        garbage_is_cut_off_at_once(addr, 20).await?;
        anyhow::ensure!(proxy.stats().connections_refused == u64::try_from(t.refused)? + 1);
        honest.mines_past(mined, MINES).await?;
        stop.cancel();
        proxy.shutdown().await;
        Ok(())
    })
    .await;
}

/// How the talkers of the first test fared.
struct Talkers {
    /// When each admitted talker was closed, after connecting, by kind.
    admitted: [Vec<Duration>; 3],
    /// Talkers refused at once (no slot left).
    refused: usize,
    /// Whether a connection made while the talkers held the slots was refused.
    late_refused: bool,
}

/// A talker's `n`th line, by kind: an unknown method, JSON that is not a request, or a served
/// request short of the handshake (subscribe, then extranonce subscriptions, never authorize).
fn talker_line(kind: usize, n: u64) -> String {
    match kind {
        0 => format!(r#"{{"id":{n},"method":"mining.get_transactions","params":[]}}"#),
        1 => format!(r#"{{"id":{n},"result":true,"error":null}}"#),
        _ if n == 1 => r#"{"id":1,"method":"mining.subscribe","params":["talker/1"]}"#.into(),
        _ => format!(r#"{{"id":{n},"method":"mining.extranonce.subscribe","params":[]}}"#),
    }
}

/// Talkers opened at once: a burst of a few hundred connects overflows loopback's queue, and
/// a dropped SYN costs a second.
const BATCH: usize = 50;

/// Opens the talkers from 127.0.0.2, a batch at a time, each sending a line every 200 ms until
/// it is closed; probes for a free slot while they are connected.
async fn talkers(addr: SocketAddr, proxy: &jd_proxy::Proxy) -> anyhow::Result<Talkers> {
    let mut set = JoinSet::new();
    for i in 0..TALKERS {
        set.spawn(async move {
            let mut c = RawClient::connect_from(addr, loopback(2)).await?;
            let every = Duration::from_millis(200);
            let closed = c
                .talk_until_closed(|n| talker_line(i % 3, n), every, Duration::from_secs(10))
                .await;
            anyhow::Ok((i % 3, closed, c.bytes_in))
        });
        // Once the proxy has let in or refused every talker so far (the honest miner came
        // first), the next batch.
        if (i + 1) % BATCH == 0 || i + 1 == TALKERS {
            let handled = wait_until(Duration::from_secs(5), || async {
                let s = proxy.stats();
                s.connections_total + s.connections_refused > i as u64 + 1
            })
            .await;
            anyhow::ensure!(
                handled,
                "the proxy took {} talkers in or refused them",
                i + 1
            );
        }
    }
    let mut probe = RawClient::connect(addr).await?;
    let late_refused =
        probe.closed_within(Duration::from_secs(1)).await.is_some() && probe.bytes_in == 0;
    let mut t = Talkers {
        admitted: Default::default(),
        refused: 0,
        late_refused,
    };
    for r in set.join_all().await {
        let (kind, closed, bytes) = r?;
        let closed = closed.with_context(|| format!("a talker of kind {kind} is still open"))?;
        // A talker let in is closed at the deadline; one refused, at once.
        if closed < HANDSHAKE {
            anyhow::ensure!(bytes == 0, "a refused talker got {bytes} bytes");
            t.refused += 1;
        } else {
            t.admitted[kind].push(closed);
        }
    }
    Ok(t)
}

/// `n` connections sending an HTTP request: each is closed at once.
async fn garbage_is_cut_off_at_once(addr: SocketAddr, n: usize) -> anyhow::Result<()> {
    for _ in 0..n {
        let mut c = RawClient::connect_from(addr, loopback(2)).await?;
        c.send("GET / HTTP/1.1\r\nHost: x\r\n").await?;
        let closed = c.closed_within(Duration::from_secs(1)).await;
        anyhow::ensure!(closed.is_some(), "garbage is cut off at once");
    }
    Ok(())
}

/// A connection from `from` that is served: its subscribe is answered.
async fn served(server: SocketAddr, from: IpAddr) -> anyhow::Result<RawClient> {
    let mut c = RawClient::connect_from(server, from).await?;
    let reply = c.call(1, "mining.subscribe", json!(["test/1.0"])).await?;
    anyhow::ensure!(
        reply.is_some_and(|r| r["result"][1].is_string()),
        "a connection from {from} is served"
    );
    Ok(c)
}

/// A connection from `from` that is refused: closed at once, nothing sent back.
async fn refused(server: SocketAddr, from: IpAddr) -> anyhow::Result<()> {
    let mut c = RawClient::connect_from(server, from).await?;
    let closed = c.closed_within(Duration::from_secs(1)).await;
    anyhow::ensure!(
        closed.is_some() && c.bytes_in == 0,
        "a connection from {from} is refused at once: closed after {closed:?}, {} bytes back",
        c.bytes_in
    );
    Ok(())
}

/// Waits until the proxy has counted a connection closed (after dropping one of ours), so
/// its place is free.
async fn one_closed(proxy: &jd_proxy::Proxy, open: u64) -> anyhow::Result<()> {
    let closed = wait_until(Duration::from_secs(2), || async {
        proxy.stats().connections < open
    })
    .await;
    anyhow::ensure!(closed, "the proxy saw the connection close");
    // Its place is given back right after the count.
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}

/// Connections one address may hold in the second test.
const PER_IP: usize = 4;

/// `stratum.max_connections_per_ip`: an address past its cap is refused at once and no other
/// address is affected; a closed connection gives its place back; an exempt address (a NAT
/// gateway) holds many more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_past_its_cap_is_refused_and_no_other() {
    bounded(TEST_TIMEOUT, async {
        init_tracing();
        let (node, wallet) = setup::regtest().await?;
        let dir = tempfile::tempdir()?;
        let proxy = setup::proxy(&node, &wallet, dir.path(), |raw| {
            raw.stratum.max_connections_per_ip = Some(PER_IP);
            raw.stratum.per_ip_exempt = vec!["127.0.0.3".into()];
        })
        .await?;
        let addr = proxy.local_addr();
        let stop = CancellationToken::new();
        let honest = Honest::spawn(addr, Dialect::Whatsminer, loopback(1), BUSY, &stop);
        let mined = honest.mines_past(0, MINES).await?;

        let mut held = Vec::new();
        for _ in 0..PER_IP {
            held.push(served(addr, loopback(2)).await?);
        }
        for _ in 0..6 {
            refused(addr, loopback(2)).await?;
        }
        anyhow::ensure!(proxy.stats().connections_refused == 6);
        // Other addresses are not affected: a miner from 127.0.0.4 gets in and mines.
        let other = Honest::spawn(addr, Dialect::Avalon, loopback(4), BUSY, &stop);
        other.mines_past(0, MINES).await?;
        // The exempt address holds five times the cap.
        let mut gateway = Vec::new();
        for _ in 0..5 * PER_IP {
            gateway.push(served(addr, loopback(3)).await?);
        }
        // A closed connection gives its place back, and the cap holds again after it.
        let open = proxy.stats().connections;
        drop(held.pop());
        one_closed(&proxy, open).await?;
        held.push(served(addr, loopback(2)).await?);
        refused(addr, loopback(2)).await?;
        anyhow::ensure!(proxy.stats().connections_refused == 7);
        honest.mines_past(mined, MINES).await?;
        stop.cancel();
        proxy.shutdown().await;
        Ok(())
    })
    .await;
}

/// `stratum.allow_networks`: a source outside every listed network is refused at once, one
/// inside is served, and the edges of each network are where its prefix puts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_sources_in_the_allowed_networks_are_served() {
    bounded(TEST_TIMEOUT, async {
        init_tracing();
        let (node, wallet) = setup::regtest().await?;
        let dir = tempfile::tempdir()?;
        let proxy = setup::proxy(&node, &wallet, dir.path(), |raw| {
            raw.stratum.allow_networks = vec!["127.0.0.0/31".into(), "127.0.0.4/30".into()];
        })
        .await?;
        let addr = proxy.local_addr();
        let stop = CancellationToken::new();
        let honest = Honest::spawn(addr, Dialect::Braiins, loopback(1), BUSY, &stop);
        let mined = honest.mines_past(0, MINES).await?;

        // Just past 127.0.0.0/31, just below and just past 127.0.0.4/30.
        for n in [2, 3, 8] {
            refused(addr, loopback(n)).await?;
        }
        // Both ends of 127.0.0.4/30.
        let _inside = (
            served(addr, loopback(4)).await?,
            served(addr, loopback(7)).await?,
        );
        let other = Honest::spawn(addr, Dialect::Nerdminer, loopback(5), BUSY, &stop);
        other.mines_past(0, MINES).await?;
        anyhow::ensure!(proxy.stats().connections_refused == 3);
        honest.mines_past(mined, MINES).await?;
        stop.cancel();
        proxy.shutdown().await;
        Ok(())
    })
    .await;
}

/// Requests a second in the flood test, and the burst that allows (five seconds' worth,
/// proxy/src/sv1/session/limits.rs).
const RATE: u32 = 20;
const BURST: usize = 100;
/// What the flood sends, in one write.
const FLOOD: usize = 10_000;
/// The most bytes the flooder may get back: the burst's replies (3,692 bytes) and a little.
const FLOOD_BYTES_BACK: usize = 4_096;

/// `n` served requests with ids from `first`, as one write.
fn requests(first: u64, n: usize) -> Vec<u8> {
    (first..first + n as u64)
        .flat_map(|id| {
            format!(r#"{{"id":{id},"method":"mining.extranonce.subscribe","params":[]}}"#)
                .into_bytes()
                .into_iter()
                .chain([b'\n'])
        })
        .collect()
}

/// `stratum.max_requests_per_sec`: a connection that floods is cut off once its burst is
/// spent, and what it gets back is bounded by the burst; a connection under the rate is not
/// cut off, and the address itself is not banned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_flood_is_cut_off_after_its_burst() {
    bounded(TEST_TIMEOUT, async {
        init_tracing();
        let (node, wallet) = setup::regtest().await?;
        let dir = tempfile::tempdir()?;
        let proxy = setup::proxy(&node, &wallet, dir.path(), |raw| {
            raw.stratum.max_requests_per_sec = Some(RATE);
        })
        .await?;
        let addr = proxy.local_addr();
        let stop = CancellationToken::new();
        let honest = Honest::spawn(addr, Dialect::Bitaxe, loopback(1), BUSY, &stop);
        let mined = honest.mines_past(0, MINES).await?;

        let flood = requests(1, FLOOD);
        let mut flooder = RawClient::connect_from(addr, loopback(2)).await?;
        let start = Instant::now();
        let got = flooder
            .exchange(&flood, Duration::from_secs(10), |_| false)
            .await?;
        let cut = got.closed.context("the flooder is cut off")? - start;
        let answered = got.lines.len();
        eprintln!(
            "flood: {FLOOD} requests ({} bytes) in one write; cut off after {cut:?}; \
             {answered} answered, {} bytes back",
            flood.len(),
            got.bytes
        );
        for (i, v) in got.lines.iter().enumerate() {
            anyhow::ensure!(is_reply(v, i as u64 + 1) && v["result"] == true, "{v}");
        }
        let most = BURST + (f64::from(RATE) * cut.as_secs_f64()).ceil() as usize + 1;
        anyhow::ensure!(
            (BURST..=most).contains(&answered),
            "the burst is answered, no more: {answered} of {BURST}..={most}"
        );
        anyhow::ensure!(got.bytes <= FLOOD_BYTES_BACK, "{} bytes back", got.bytes);
        under_the_rate(addr).await?;
        // Cut off, not banned: the flooder's address is served again.
        served(addr, loopback(2)).await?;
        honest.mines_past(mined, MINES).await?;
        stop.cancel();
        proxy.shutdown().await;
        Ok(())
    })
    .await;
}

/// A burst, then half the rate for two seconds: all answered and still connected; then a
/// second burst, which the bucket has not refilled for: cut off part way.
async fn under_the_rate(addr: SocketAddr) -> anyhow::Result<()> {
    let mut c = RawClient::connect_from(addr, loopback(3)).await?;
    let burst = c
        .exchange(&requests(1, BURST), Duration::from_secs(5), |v| {
            is_reply(v, BURST as u64)
        })
        .await?;
    anyhow::ensure!(burst.lines.len() == BURST && burst.closed.is_none());
    let paced = 20;
    for id in (BURST + 1..).take(paced) {
        tokio::time::sleep(Duration::from_secs(1) / (RATE / 2)).await;
        let reply = c
            .call(id as u64, "mining.extranonce.subscribe", json!([]))
            .await?;
        anyhow::ensure!(reply.is_some(), "request {id} at half the rate is answered");
    }
    let again = c
        .exchange(
            &requests((BURST + paced + 1) as u64, BURST),
            Duration::from_secs(5),
            |_| false,
        )
        .await?;
    eprintln!(
        "under the rate: {BURST} at once and {paced} at {} a second answered; a second burst \
         right after: {} answered before the cut-off",
        RATE / 2,
        again.lines.len()
    );
    anyhow::ensure!(
        again.closed.is_some() && again.lines.len() < BURST,
        "a second burst is cut off part way"
    );
    Ok(())
}

/// Connections of the extranonce1 test that authorize but never subscribe.
const NEVER_SUBSCRIBE: usize = 300;

/// A connection from 127.0.0.`n` that subscribes, and the answer it got.
async fn subscribe(addr: SocketAddr, n: u8) -> anyhow::Result<(RawClient, serde_json::Value)> {
    let mut c = RawClient::connect_from(addr, loopback(n)).await?;
    let reply = c.call(1, "mining.subscribe", json!(["s/1"])).await?;
    Ok((c, reply.context("an answer to subscribe")?))
}

/// `stratum.extranonce1_bytes = 1`: every live subscribed connection has its own extranonce1,
/// connections that never subscribe take none, a full space refuses the next subscribe rather
/// than share a value, and a value given back is handed out again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extranonce1_values_stay_distinct_and_a_full_space_refuses() {
    bounded(TEST_TIMEOUT, async {
        init_tracing();
        let (node, wallet) = setup::regtest().await?;
        let dir = tempfile::tempdir()?;
        let proxy = setup::proxy(&node, &wallet, dir.path(), |raw| {
            raw.stratum.extranonce1_bytes = Some(1);
            raw.stratum.max_connections_per_ip = Some(0);
        })
        .await?;
        let addr = proxy.local_addr();
        let stop = CancellationToken::new();
        let mut honest = Honest::spawn(addr, Dialect::Cgminer, loopback(1), BUSY, &stop);
        let honest_en1 = hex::encode(honest.extranonce1().await?);
        let mined = honest.mines_past(0, MINES).await?;

        let mut idle = Vec::new();
        for _ in 0..NEVER_SUBSCRIBE {
            let mut c = RawClient::connect_from(addr, loopback(2)).await?;
            let reply = c
                .call(1, "mining.authorize", json!(["idle.1", "x"]))
                .await?;
            anyhow::ensure!(reply.is_some_and(|r| r["result"] == true));
            idle.push(c);
        }
        // 200 subscribers, then the rest of the space: 256 values, each once.
        let mut values = HashSet::from([honest_en1]);
        let mut subscribers = Vec::new();
        for i in 0..255 {
            let (c, reply) = subscribe(addr, if i < 200 { 3 } else { 4 }).await?;
            let en1 = reply["result"][1]
                .as_str()
                .context("subscribed")?
                .to_string();
            anyhow::ensure!(values.insert(en1.clone()), "{i}: {en1}, a value in use");
            subscribers.push((c, en1));
        }
        // Full: the next subscribe is refused and the connection closed.
        let (mut extra, reply) = subscribe(addr, 5).await?;
        anyhow::ensure!(error_code(&reply) == Some(20), "refused when full: {reply}");
        anyhow::ensure!(extra.closed_within(Duration::from_secs(1)).await.is_some());
        // A value given back goes to the next subscriber.
        let open = proxy.stats().connections;
        let (gone, freed) = subscribers.swap_remove(17);
        drop(gone);
        one_closed(&proxy, open).await?;
        let (_next, reply) = subscribe(addr, 5).await?;
        anyhow::ensure!(
            reply["result"][1] == freed.as_str(),
            "{freed} again: {reply}"
        );
        eprintln!(
            "extranonce1: {} distinct values among live subscribers; {NEVER_SUBSCRIBE} \
             connections that never subscribed held none",
            values.len()
        );
        honest.mines_past(mined, MINES).await?;
        stop.cancel();
        proxy.shutdown().await;
        Ok(())
    })
    .await;
}
