//! A node's `getblocktemplate` reply, as `TemplateSource::template_from_reply` takes it: the
//! body decoded, turned into a template, the farm's policy applied (the empty block on the
//! same tip when it cannot be), then the job the proxy builds from it.
//!
//! Input: one byte choosing the policy's rules, then the HTTP body.

#![no_main]

use bitcoin::{FeeRate, Network};
use jd_proxy::job::JobFactory;
use jd_proxy_fuzz::coinbase;
use libfuzzer_sys::fuzz_target;
use mining_types::template::NextBlock;
use mining_types::{ExtranonceLayout, Template, TemplateId};
use template_provider::node::gbt::BlockTemplateReply;
use template_provider::node::rpc::RawReply;
use template_provider::policy::{Policy, ScriptType};

fuzz_target!(|data: &[u8]| {
    let Some((&rules, body)) = data.split_first() else {
        return;
    };
    let raw = RawReply::new("getblocktemplate", 200, bytes::Bytes::copy_from_slice(body));
    let Ok(reply) = raw.decode::<BlockTemplateReply>() else {
        return;
    };
    let Ok(template) = reply.into_template(TemplateId::new(1), Network::Regtest) else {
        return;
    };
    let policy = policy(rules, &template);
    let template = match policy.apply_with_report(&template) {
        Ok(outcome) => {
            let kept = outcome
                .template
                .as_ref()
                .map_or(template.txs.len(), |t| t.txs.len());
            assert_eq!(kept + outcome.removed.len(), template.txs.len());
            outcome.template.unwrap_or(template)
        }
        Err(_) => empty_on_tip(&template),
    };
    let layout = ExtranonceLayout::new(4, 4).expect("valid");
    let _ = JobFactory::new(coinbase(), layout).make(template.into(), None);
});

/// Each bit turns a rule on, so every combination the config allows is reachable.
fn policy(rules: u8, t: &Template) -> Policy {
    let mut p = Policy::new();
    if rules & 1 != 0 {
        if let Some(tx) = t.txs.first() {
            p = p.with_excluded_txid(tx.txid);
        }
    }
    if rules & 2 != 0 {
        p = p.with_excluded_script_type(ScriptType::BareMultisig);
    }
    if rules & 4 != 0 {
        p = p.with_excluded_script_type(ScriptType::P2pkh);
    }
    if rules & 8 != 0 {
        p = p.with_max_datacarrier_bytes(if rules & 0x80 != 0 { 0 } else { 83 });
    }
    if rules & 0x10 != 0 {
        p = p.with_min_feerate(FeeRate::from_sat_per_kwu(250));
    }
    if rules & 0x20 != 0 {
        p = p.with_weight_reserve(8_000);
    }
    if rules & 0x40 != 0 {
        // Leaves a few thousand weight units: the reserve rule drops most transactions.
        p = p.with_weight_reserve(3_990_000);
    }
    p
}

/// What the source mines when the policy cannot filter a template.
fn empty_on_tip(t: &Template) -> Template {
    let next = NextBlock {
        prev_hash: t.prev_hash,
        height: t.height,
        bits: t.bits,
        min_time: t.min_time,
    };
    Template::empty_on_tip(t.id, t.network, &next, t.version, t.cur_time)
}
