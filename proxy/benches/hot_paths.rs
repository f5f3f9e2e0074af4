//! The proxy's hot paths, one core at a time:
//! - an SV1 `mining.submit` line to a typed request;
//! - the share check (coinbase txid, a 12-level merkle branch, the header hash) on a job made
//!   from a full-size template, alone and with everything a session does around it;
//! - job fan-out: building a job (its notify lines are serialized once) against copying the
//!   line into every connection's output buffer, and against rendering it per connection;
//! - a full-size `getblocktemplate` reply to the first job, end to end.
//!
//! `cargo bench -p jd-proxy --bench hot_paths`

use std::collections::HashSet;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bitcoin::hashes::Hash;
use bitcoin::{Network, ScriptBuf};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use jd_proxy::job::{sv1_prev_hash, Job, JobFactory};
use jd_proxy::share::{check_share, Difficulty, ShareCheck, Submission};
use jd_proxy::sv1::codec::{self, Request};
use jd_proxy::sv1::conn::LineFramer;
use mining_types::{
    CoinbaseConfig, CoinbaseSplit, Extranonce1, ExtranonceLayout, JobId, Template, TemplateId,
};
use template_provider::node::gbt::BlockTemplateReply;
use template_provider::node::rpc::RawReply;

#[path = "../../load/src/synth_gbt.rs"]
#[allow(dead_code)]
mod synth_gbt;

/// Transactions in the synthetic template: a full block, and a 12-level coinbase branch.
const TXS: usize = 3000;

const SUBMIT_6: &[u8] = br#"{"id":1234,"method":"mining.submit","params":["farm1.rack07.s21-0042","1a2f","0000a3c1","6920f1c3","9e3779b9","00002000"]}"#;
const SUBMIT_5: &[u8] = br#"{"params":["bc1qfarmworker.001","1a2f","0000a3c1","6920f1c3","9e3779b9"],"id":"77","method":"mining.submit"}"#;

fn layout() -> ExtranonceLayout {
    ExtranonceLayout::new(4, 4).expect("4+4 is valid")
}

fn coinbase_config() -> CoinbaseConfig {
    let mut p2wpkh = vec![0x00, 0x14];
    p2wpkh.extend_from_slice(&[0x5a; 20]);
    CoinbaseConfig {
        payout_script: ScriptBuf::from_bytes(p2wpkh),
        tag: b"/jd-proxy/".to_vec(),
    }
}

/// The node's reply to the first job, as the proxy does it: one typed pass over the body (hex
/// decoded as it is read), then the template.
fn body_to_template(body: &[u8]) -> Template {
    let raw = RawReply::new("getblocktemplate", 200, bytes::Bytes::copy_from_slice(body));
    raw.decode::<BlockTemplateReply>()
        .expect("a template reply")
        .into_template(TemplateId::new(1), Network::Bitcoin)
        .expect("valid hex")
}

fn full_job() -> Job {
    let body = synth_gbt::gbt_reply_body(TXS, 42);
    let template = body_to_template(&body);
    assert_eq!(template.merkle_path.len(), 12, "a 12-level branch");
    JobFactory::new(coinbase_config(), layout())
        .make(Arc::new(template), None)
        .expect("a job")
}

fn check_for(difficulty: f64, now: u32) -> ShareCheck {
    ShareCheck {
        version_mask: 0x1fff_e000,
        target: Difficulty::new(difficulty).expect("positive").target(),
        now,
        max_future_secs: 600,
    }
}

fn sv1_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("sv1_decode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("mining.submit 6 params", |b| {
        b.iter(|| {
            let m = codec::decode(black_box(SUBMIT_6), 4).expect("a submit");
            assert!(matches!(m.request, Request::Submit(_)));
            black_box(m.id);
        });
    });
    g.bench_function("mining.submit 5 params, string id", |b| {
        b.iter(|| black_box(codec::decode(black_box(SUBMIT_5), 4).expect("a submit").id));
    });
    g.finish();
}

fn share_check(c: &mut Criterion) {
    let job = full_job();
    let en1 = Extranonce1::from_counter(1, layout());
    let ntime = job.template.cur_time;
    let easy = check_for(1e-12, ntime);
    let hard = check_for(1e12, ntime);
    let mut g = c.benchmark_group("share_check");
    g.throughput(Throughput::Elements(1));
    let mut nonce = 0u32;
    g.bench_function("check_share accepted (12-level branch)", |b| {
        b.iter(|| {
            nonce = nonce.wrapping_add(1);
            let s = Submission {
                extranonce2: &[0, 0, 0xa3, 0xc1],
                ntime,
                nonce,
                version_bits: Some(0x2000),
            };
            black_box(check_share(&job, &en1, &s, &easy).expect("valid"))
        });
    });
    g.bench_function("check_share rejected low difficulty", |b| {
        b.iter(|| {
            nonce = nonce.wrapping_add(1);
            let s = Submission {
                extranonce2: &[0, 0, 0xa3, 0xc1],
                ntime,
                nonce,
                version_bits: Some(0x2000),
            };
            black_box(check_share(&job, &en1, &s, &hard).is_err())
        });
    });
    // What a session does per submit, less the socket: decode the line, find the job, parse
    // the fields, check, remember the header for duplicate detection, render the reply.
    let lines: Vec<Vec<u8>> = (0..4096u32)
        .map(|n| {
            format!(
                r#"{{"id":{n},"method":"mining.submit","params":["farm1.rack07.s21-0042","{}","0000a3c1","{ntime:08x}","{:08x}","00002000"]}}"#,
                job.id,
                n.wrapping_mul(2_654_435_761)
            )
            .into_bytes()
        })
        .collect();
    let mut i = 0usize;
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(4096);
    g.bench_function(
        "submit line to reply (decode + parse + check + duplicate set)",
        |b| {
            b.iter(|| {
                i = (i + 1) % lines.len();
                if i == 0 {
                    seen.clear();
                }
                let m = codec::decode(&lines[i], 4).expect("a submit");
                let Request::Submit(Ok(s)) = m.request else {
                    unreachable!()
                };
                assert_eq!(s.job_id, job.id);
                let sub = Submission {
                    extranonce2: s.extranonce2.as_bytes(),
                    ntime: s.ntime,
                    nonce: s.nonce,
                    version_bits: s.version_bits,
                };
                let v = check_share(&job, &en1, &sub, &easy).expect("valid");
                seen.insert(v.hash);
                out.clear();
                codec::render::ok(&mut out, m.id, "true");
                black_box(out.len())
            });
        },
    );
    g.finish();
}

/// Line framing as a session drives it: take a line, then ask whether another one is already
/// buffered (pipelined submits are answered in one write).
fn line_framing(c: &mut Criterion) {
    let mut g = c.benchmark_group("line_framing");
    // 16 pipelined submits arriving in one read.
    let mut burst = Vec::new();
    for _ in 0..16 {
        burst.extend_from_slice(SUBMIT_6);
        burst.push(b'\n');
    }
    g.throughput(Throughput::Elements(16));
    g.bench_function("16 pipelined submit lines in one read", |b| {
        b.iter(|| {
            let mut f = LineFramer::new(16 * 1024);
            f.read_buf().extend_from_slice(black_box(&burst));
            let mut n = 0;
            while let Some(line) = f.take_line().expect("line") {
                n += line.len();
                black_box(f.has_buffered_line());
            }
            black_box(n)
        });
    });
    // One submit arriving in 8-byte segments (a slow or fragmenting link).
    let mut one = SUBMIT_6.to_vec();
    one.push(b'\n');
    g.throughput(Throughput::Elements(1));
    g.bench_function("one submit line arriving in 8-byte segments", |b| {
        b.iter(|| {
            let mut f = LineFramer::new(16 * 1024);
            let mut got = None;
            for piece in black_box(&one).chunks(8) {
                f.read_buf().extend_from_slice(piece);
                if let Some(line) = f.take_line().expect("line") {
                    got = Some(line);
                }
            }
            black_box(got)
        });
    });
    g.finish();
}

fn job_fanout(c: &mut Criterion) {
    let job = full_job();
    let template = job.template.clone();
    let line = job.notify_line(true).to_vec();
    let mut g = c.benchmark_group("job_fanout");
    g.bench_function(
        format!(
            "Job::new on the full template (notify line {} bytes, serialized once)",
            line.len()
        ),
        |b| {
            b.iter(|| {
                let split = CoinbaseSplit::build(&template, &coinbase_config(), 8).expect("split");
                black_box(Job::new(JobId::new(7), template.clone(), split, true, None))
            });
        },
    );
    for n in [1_000usize, 10_000] {
        // Every session keeps its output buffer between flushes, as Session::flush does.
        let mut buffers: Vec<Vec<u8>> = (0..n).map(|_| Vec::with_capacity(4096)).collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(
            format!("copy the notify line into {n} connection buffers"),
            |b| {
                b.iter(|| {
                    for buf in &mut buffers {
                        buf.clear();
                        buf.extend_from_slice(job.notify_line(false));
                    }
                    black_box(buffers.len())
                });
            },
        );
    }
    // The alternative the proxy avoids: rendering the notify for each connection.
    let n = 1_000usize;
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(
        format!("render the notify per connection, {n} connections"),
        |b| {
            b.iter(|| {
                let mut total = 0;
                for _ in 0..n {
                    total += render_notify(&job).len();
                }
                black_box(total)
            });
        },
    );
    g.finish();
}

/// The proxy's notify rendering, repeated here to price rendering it per connection.
fn render_notify(job: &Job) -> String {
    let t = &job.template;
    let branch: Vec<String> = t
        .merkle_path
        .iter()
        .map(|n| hex::encode(n.as_byte_array()))
        .collect();
    let params = serde_json::json!([
        job.id.to_string(),
        sv1_prev_hash(&t.prev_hash),
        hex::encode(job.coinbase.prefix()),
        hex::encode(job.coinbase.suffix()),
        branch,
        format!("{:08x}", t.version.to_consensus() as u32),
        format!("{:08x}", t.bits.to_consensus()),
        format!("{:08x}", t.cur_time),
        false,
    ]);
    let mut s =
        serde_json::json!({"id": null, "method": "mining.notify", "params": params}).to_string();
    s.push('\n');
    s
}

fn template_to_job(c: &mut Criterion) {
    let body = synth_gbt::gbt_reply_body(TXS, 42);
    let mut g = c.benchmark_group("template_to_first_job");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function(
        format!(
            "getblocktemplate body ({:.1} MB, {TXS} txs) to first job",
            body.len() as f64 / 1e6
        ),
        |b| {
            b.iter(|| {
                let template = body_to_template(black_box(&body));
                let mut factory = JobFactory::new(coinbase_config(), layout());
                black_box(factory.make(Arc::new(template), None).expect("a job"))
            });
        },
    );
    let raw = RawReply::new(
        "getblocktemplate",
        200,
        bytes::Bytes::copy_from_slice(&body),
    );
    g.bench_function("of which: typed decode of the body (JSON and hex)", |b| {
        b.iter(|| {
            black_box(
                black_box(&raw)
                    .decode::<BlockTemplateReply>()
                    .expect("reply"),
            )
        });
    });
    g.bench_function("of which: into_template (merkle branch)", |b| {
        b.iter_batched(
            || raw.decode::<BlockTemplateReply>().expect("reply"),
            |reply| {
                black_box(
                    reply
                        .into_template(TemplateId::new(1), Network::Bitcoin)
                        .expect("ok"),
                )
            },
            BatchSize::LargeInput,
        );
    });
    g.bench_function("of which: the first job (JobFactory::make)", |b| {
        let template = Arc::new(body_to_template(&body));
        b.iter(|| {
            let mut factory = JobFactory::new(coinbase_config(), layout());
            black_box(factory.make(template.clone(), None).expect("a job"))
        });
    });
    // The path before: the body into a `Value` tree first, then `result` into the typed reply.
    g.bench_function(
        "old path: body to Value, to BlockTemplateReply, to first job",
        |b| {
            b.iter(|| {
                let mut v: serde_json::Value =
                    serde_json::from_slice(black_box(&body)).expect("JSON");
                let result = v
                    .as_object_mut()
                    .and_then(|m| m.remove("result"))
                    .expect("result");
                let reply: BlockTemplateReply = serde_json::from_value(result).expect("reply");
                let template = reply
                    .into_template(TemplateId::new(1), Network::Bitcoin)
                    .expect("ok");
                let mut factory = JobFactory::new(coinbase_config(), layout());
                black_box(factory.make(Arc::new(template), None).expect("a job"))
            });
        },
    );
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = sv1_parse, line_framing, share_check, job_fanout, template_to_job
}
criterion_main!(benches);
