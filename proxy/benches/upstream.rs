//! Pool mode's share path after the proxy's own check, one core at a time: a share handed from
//! a session to the pool link (`UpShare::new` and `ShareRoute::send`), and the link turning shares into encrypted
//! `SubmitSharesExtended` frames written to a loopback socket in bursts (a pool thread reads
//! and decrypts them, as a pool would).
//!
//! `cargo bench -p jd-proxy --bench upstream`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use binary_sv2::B032;
use bitcoin::hashes::Hash;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use jd_proxy::upstream::shares::{Accepted, Links, ShareRoute, UpShare};
use mining_sv2::{SubmitSharesExtended, MESSAGE_TYPE_SUBMIT_SHARES_EXTENDED};
use mining_types::JobId;
use sv2_wire::{accept, connect, AuthorityKeypair, NoiseWriter};

/// Shares per write: what the link sends in one go when sessions hand it shares in bursts.
const BURST: u64 = 64;

fn share(seq: u32, extranonce: &[u8; 16]) -> SubmitSharesExtended<'_> {
    SubmitSharesExtended {
        channel_id: 2,
        sequence_number: seq,
        job_id: 7,
        nonce: seq.wrapping_mul(2_654_435_761),
        ntime: 1_700_000_000,
        version: 0x2000_0000,
        extranonce: B032::try_from(&extranonce[..]).expect("16 bytes"),
    }
}

/// A Noise writer to a "pool" on its own thread that reads and decrypts every frame.
fn writer_to_pool(rt: &tokio::runtime::Runtime) -> NoiseWriter {
    let keys = AuthorityKeypair::generate();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let pool_keys = keys.clone();
    std::thread::spawn(move || {
        let prt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        prt.block_on(async move {
            listener.set_nonblocking(true).expect("nonblocking");
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let (s, _) = listener.accept().await.expect("accept");
            let (mut r, _w) = accept(
                s,
                &pool_keys,
                Duration::from_secs(60),
                Duration::from_secs(5),
            )
            .await
            .expect("handshake");
            while r.recv().await.is_ok() {}
        });
    });
    rt.block_on(async {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (r, w) = connect(stream, keys.public(), Duration::from_secs(5))
            .await
            .expect("handshake");
        // The pool never answers here; keep the read half open for the bench's lifetime.
        std::mem::forget(r);
        w
    })
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("upstream");
    g.measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(1));

    let extranonce = [7u8; 16];
    let mut w = writer_to_pool(&rt);
    g.bench_function(
        "SubmitSharesExtended: encode, encrypt, write in bursts of 64",
        |b| {
            let mut seq = 0u32;
            b.iter(|| {
                seq = seq.wrapping_add(1);
                w.queue(
                    share(seq, &extranonce),
                    MESSAGE_TYPE_SUBMIT_SHARES_EXTENDED,
                    true,
                )
                .expect("queue");
                if u64::from(seq) % BURST == 0 {
                    rt.block_on(w.flush()).expect("flush");
                }
            });
            rt.block_on(w.flush()).expect("flush");
        },
    );

    g.bench_function(
        "UpShare::new + ShareRoute::send: session to link queue",
        |b| {
            let links = Arc::new(Links::default());
            let (registration, mut inbox) = links.register(8);
            let tag = registration.tag;
            let mut route = ShareRoute::default();
            let worker: Arc<str> = Arc::from("farm.rack07.s21-0042");
            let header = bitcoin::block::Header {
                version: bitcoin::block::Version::from_consensus(0x2000_0000),
                prev_blockhash: bitcoin::BlockHash::all_zeros(),
                merkle_root: bitcoin::TxMerkleNode::all_zeros(),
                time: 1_700_000_000,
                bits: bitcoin::CompactTarget::from_consensus(0x1703_4219),
                nonce: 42,
            };
            let hash = header.block_hash();
            let mut n = 0u32;
            b.iter(|| {
                let accepted = Accepted {
                    job: JobId::new(9),
                    extranonce1: black_box(&[1, 2, 3, 4]),
                    extranonce2: black_box(&[5, 6, 7, 8]),
                    header: &header,
                    hash,
                    difficulty: 1024.0,
                    is_block: false,
                };
                let share = UpShare::new(tag, &accepted, &worker).expect("fits");
                let _ = route.send(&links, tag.link, share);
                n = n.wrapping_add(1);
                if n.is_multiple_of(1024) {
                    while inbox.shares.try_recv().is_ok() {}
                }
            });
        },
    );
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
