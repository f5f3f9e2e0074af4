//! Stratum V1 from an ASIC: one line through the codec, then the input as a sequence of lines
//! through a session, as `sv1::session::serve` feeds it.
//!
//! Input: one setup byte (difficulty, extranonce layout, solo or pool job), then lines.
//! Lines starting with `!` stand for what else reaches a session: `!j` a new job on the same
//! tip, `!t` a job on a new tip, `!k` a vardiff tick a minute later.

#![no_main]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jd_proxy::job::Job;
use jd_proxy::sv1::codec;
use jd_proxy::sv1::session::{Effect, Now, Session};
use jd_proxy::upstream::shares::{Links, PoolTag};
use jd_proxy_fuzz::{coinbase, shared, template, NTIME};
use libfuzzer_sys::fuzz_target;
use mining_types::{CoinbaseSplit, Difficulty, ExtranonceLayout, JobId, Template};

/// Tiny difficulties make nearly every share valid, so the fuzzer reaches accepted shares and
/// blocks without having to mine.
const DIFFICULTIES: [f64; 4] = [1e-9, 1e-3, 1.0, 1e6];
/// (extranonce1, extranonce2) sizes: the default, the largest, and a one-byte space that fills.
const LAYOUTS: [(u8, u8); 4] = [(4, 4), (8, 8), (1, 1), (2, 8)];

fuzz_target!(|data: &[u8]| {
    let Some((&setup, lines)) = data.split_first() else {
        return;
    };
    let (en1, en2) = LAYOUTS[usize::from(setup >> 2) & 3];
    let layout = ExtranonceLayout::new(en1, en2).expect("valid layouts");
    let _ = codec::decode(lines, layout.extranonce2_len());

    let difficulty = Difficulty::new(DIFFICULTIES[usize::from(setup & 3)]).expect("positive");
    // A pad of 20 puts a pool share over 32 bytes of extranonce with the (8, 8) layout.
    let pool = (setup & 0x10 != 0).then(|| pool_tag(if setup & 0x20 != 0 { 20 } else { 0 }));
    let start = Instant::now();
    let mut now = Now {
        instant: start,
        unix: NTIME,
    };
    let peer: SocketAddr = "10.0.0.7:4028".parse().expect("an address");
    let mut ids = 1..;
    let mut job = |t: Arc<Template>| make_job(ids.next().expect("endless"), t, layout, pool);
    let mut session = Session::new(peer, shared(difficulty, layout), job(template()), start);
    let mut tips = 0u8;
    for line in lines.split(|&b| b == b'\n') {
        match line {
            b"!j" => session.on_job(job(template())),
            b"!t" => {
                tips = tips.wrapping_add(1);
                let mut t = (*template()).clone();
                t.prev_hash = bitcoin::hashes::Hash::from_byte_array([tips; 32]);
                session.on_job(job(Arc::new(t)));
            }
            b"!k" => {
                now.instant += Duration::from_secs(60);
                now.unix += 60;
                session.on_tick(now);
            }
            _ => {
                let ended = session.handle_line(line, now).is_err();
                drain(&mut session);
                if ended {
                    return;
                }
            }
        }
        drain(&mut session);
    }
});

fn make_job(
    id: u32,
    t: Arc<Template>,
    layout: ExtranonceLayout,
    pool: Option<PoolTag>,
) -> Arc<Job> {
    let split = CoinbaseSplit::build(&t, &coinbase(), layout.total_len()).expect("a coinbase");
    Arc::new(Job::new(JobId::new(id), t, split, true, pool))
}

/// A link's tag. The session only carries it into the shares it hands on (routing them to the
/// link is `serve`'s job), so the link need not outlive this.
fn pool_tag(pad: u8) -> PoolTag {
    Arc::new(Links::default()).register(pad).0.tag
}

/// What `serve` would write and hand on. Every line written must be JSON (ids are echoed
/// verbatim, so this is where an injection would show), and every block must assemble into
/// the block the share hashed to, as the block router builds it for the node.
///
/// JSON as the grammar has it: a number beyond f64 (`1e999`) is a valid id the miner chose,
/// echoed as sent, so lines are checked as raw values, not parsed into numbers.
fn drain(session: &mut Session) {
    let out = std::mem::take(&mut session.out);
    for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        if let Err(e) = serde_json::from_slice::<&serde_json::value::RawValue>(line) {
            panic!(
                "session wrote a line that is not JSON ({e}): {}",
                String::from_utf8_lossy(line)
            );
        }
    }
    for effect in session.effects.drain(..) {
        if let Effect::Block(b) = effect {
            let block = b
                .solution
                .assemble(&b.template)
                .expect("a found block assembles");
            assert_eq!(
                block.hash, b.hash,
                "the assembled block is not the one the share solved"
            );
        }
    }
}
