//! Template ingest: a full-size `getblocktemplate` reply (about 4 MB, 3,000 segwit
//! transactions, generated here) into a typed `Template`.
//!
//! `cargo bench -p template-provider --bench template`

use std::hint::black_box;
use std::time::Duration;

use bitcoin::hashes::Hash;
use bitcoin::{Network, ScriptBuf, Txid};
use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkGroup, Criterion, Throughput,
};
use mining_types::merkle;
use mining_types::{CoinbaseConfig, CoinbaseSplit, Template, TemplateId};
use template_provider::node::gbt::{decode_hex, BlockTemplateReply};
use template_provider::node::rpc::RawReply;

#[path = "../../load/src/synth_gbt.rs"]
#[allow(dead_code)]
mod synth_gbt;

const TXS: usize = 3000;

/// Every bench, on one reply body generated once.
fn template_benches(c: &mut Criterion) {
    let body = synth_gbt::gbt_reply_body(TXS, 42);
    ingest(c, &body);
    let template = serde_json::from_slice::<Envelope>(&body)
        .expect("reply")
        .result
        .into_template(TemplateId::new(1), Network::Bitcoin)
        .expect("template");
    let mut g = c.benchmark_group("template_parts");
    hex_decoders(&mut g, &template);
    merkle_and_coinbase(&mut g, &template);
    g.finish();
}

/// A whole JSON-RPC reply, typed in one pass.
#[derive(serde::Deserialize)]
struct Envelope {
    result: BlockTemplateReply,
}

/// The reply body into a template, the way the source does it and the ways before.
fn ingest(c: &mut Criterion, body: &[u8]) {
    let mut g = c.benchmark_group("template_ingest");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(body.len() as u64));
    // What TemplateSource::fetch_template does (on a blocking thread): one typed pass over the
    // body, transaction hex decoded as it is read, then the template.
    let raw = RawReply::new("getblocktemplate", 200, bytes::Bytes::copy_from_slice(body));
    g.bench_function(
        format!(
            "getblocktemplate body ({:.1} MB, {TXS} txs) to template: typed decode, into_template",
            body.len() as f64 / 1e6
        ),
        |b| {
            b.iter(|| {
                let reply: BlockTemplateReply = black_box(&raw).decode().expect("reply");
                black_box(
                    reply
                        .into_template(TemplateId::new(1), Network::Bitcoin)
                        .expect("template"),
                )
            });
        },
    );
    g.bench_function("of which: typed decode (JSON and hex)", |b| {
        b.iter(|| {
            black_box(
                black_box(&raw)
                    .decode::<BlockTemplateReply>()
                    .expect("reply"),
            )
        });
    });
    // The path before: the body into a Value tree, then `result` into the typed reply.
    g.bench_function("old path: Value tree, typed reply, into_template", |b| {
        b.iter(|| {
            let mut v: serde_json::Value = serde_json::from_slice(black_box(body)).expect("JSON");
            let result = v
                .as_object_mut()
                .and_then(|m| m.remove("result"))
                .expect("result");
            let reply: BlockTemplateReply = serde_json::from_value(result).expect("reply");
            black_box(
                reply
                    .into_template(TemplateId::new(1), Network::Bitcoin)
                    .expect("template"),
            )
        });
    });
    g.bench_function("into_template alone (merkle branch, moves)", |b| {
        b.iter_batched(
            || {
                serde_json::from_slice::<Envelope>(body)
                    .expect("reply")
                    .result
            },
            |reply| {
                black_box(
                    reply
                        .into_template(TemplateId::new(1), Network::Bitcoin)
                        .expect("template"),
                )
            },
            BatchSize::LargeInput,
        );
    });
    g.finish();
}

/// Decoding every transaction's hex: hex::decode (the decoder before), a table decoder, and
/// the SIMD decoder the reply uses now.
fn hex_decoders(g: &mut BenchmarkGroup<'_, WallTime>, template: &Template) {
    let hexes: Vec<String> = template.txs.iter().map(|t| hex::encode(&t.data)).collect();
    let hex_bytes: usize = hexes.iter().map(String::len).sum();
    g.throughput(Throughput::Bytes(hex_bytes as u64));
    g.bench_function(
        format!(
            "hex::decode of every transaction ({:.1} MB of hex)",
            hex_bytes as f64 / 1e6
        ),
        |b| {
            b.iter(|| {
                let v: Vec<Vec<u8>> = hexes.iter().map(|h| hex::decode(h).expect("hex")).collect();
                black_box(v)
            });
        },
    );
    g.bench_function("alternative: hex::decode_to_slice into a sized Vec", |b| {
        b.iter(|| {
            let v: Vec<Vec<u8>> = hexes
                .iter()
                .map(|h| {
                    let mut out = vec![0u8; h.len() / 2];
                    hex::decode_to_slice(h, &mut out).expect("hex");
                    out
                })
                .collect();
            black_box(v)
        });
    });
    g.bench_function("gbt::decode_hex (SIMD, what the reply uses)", |b| {
        b.iter(|| {
            let v: Vec<Vec<u8>> = hexes
                .iter()
                .map(|h| decode_hex(h.as_bytes()).expect("hex"))
                .collect();
            black_box(v)
        });
    });
    g.bench_function(
        "alternative: a 256-entry table decoder, two characters a byte",
        |b| {
            b.iter(|| {
                let v: Vec<Vec<u8>> = hexes
                    .iter()
                    .map(|h| table_decode(h.as_bytes()).expect("hex"))
                    .collect();
                black_box(v)
            });
        },
    );
}

/// The merkle branch and the coinbase, once per template and once per share.
fn merkle_and_coinbase(g: &mut BenchmarkGroup<'_, WallTime>, template: &Template) {
    let txids: Vec<Txid> = template.txs.iter().map(|t| t.txid).collect();
    g.throughput(Throughput::Elements(1));
    g.bench_function(format!("merkle coinbase branch over {TXS} txids"), |b| {
        b.iter(|| black_box(merkle::coinbase_path(txids.iter().copied())));
    });
    let config = CoinbaseConfig {
        payout_script: ScriptBuf::from_bytes([&[0x00, 0x14][..], &[7u8; 20]].concat()),
        tag: b"/jd-proxy/".to_vec(),
    };
    g.bench_function("CoinbaseSplit::build", |b| {
        b.iter(|| black_box(CoinbaseSplit::build(template, &config, 8).expect("coinbase")));
    });
    g.bench_function(
        "coinbase txid (the per-share hashing of the coinbase)",
        |b| {
            let split = CoinbaseSplit::build(template, &config, 8).expect("coinbase");
            b.iter(|| black_box(split.txid(&[&[1, 2, 3, 4], &[5, 6, 7, 8]]).to_byte_array()));
        },
    );
}

/// Hex digit values, 0xff for anything else.
const HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// What a faster decode costs: one table look-up per character, no iterator adapters.
fn table_decode(hex: &[u8]) -> Option<Vec<u8>> {
    if hex.len() & 1 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(hex.len() / 2);
    let mut bad = 0u8;
    for pair in hex.chunks_exact(2) {
        let (hi, lo) = (HEX[pair[0] as usize], HEX[pair[1] as usize]);
        bad |= (hi | lo) & 0xf0;
        out.push((hi << 4) | (lo & 0x0f));
    }
    (bad == 0).then_some(out)
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = template_benches
}
criterion_main!(benches);
