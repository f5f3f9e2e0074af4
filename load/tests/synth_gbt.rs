//! The synthetic template is full-size, valid JSON of the shape the node sends, and the same
//! for the same seed.

use jd_load::synth_gbt::gbt_reply_body;
use serde_json::Value;

#[test]
fn full_size_reply_is_about_four_megabytes() {
    let body = gbt_reply_body(3000, 7);
    assert!(
        (3_500_000..4_500_000).contains(&body.len()),
        "{} bytes",
        body.len()
    );
    let v: Value = serde_json::from_slice(&body).unwrap();
    let txs = v["result"]["transactions"].as_array().unwrap();
    assert_eq!(txs.len(), 3000);
    let weight: u64 = txs.iter().map(|t| t["weight"].as_u64().unwrap()).sum();
    let raw: usize = txs
        .iter()
        .map(|t| t["data"].as_str().unwrap().len() / 2)
        .sum();
    eprintln!(
        "{} bytes of JSON, {raw} bytes of transactions, {weight} WU",
        body.len()
    );
    assert!(weight < 4_000_000, "{weight} WU must fit a block");
    assert_eq!(body, gbt_reply_body(3000, 7));
}
