use serde::Deserialize;

use super::diff::changes;
use super::*;
use crate::config::{bad, RawNodes};
use crate::server::{ProviderConfig, RawProviderConfig};

/// A shape with what the daemons' files have: sections, lists of strings, a `[node]` or
/// `[[node]]`, and a list of tables.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    network: Option<String>,
    #[serde(default)]
    node: RawNodes,
    #[serde(default)]
    stratum: Stratum,
    #[serde(default)]
    upstream: Vec<Upstream>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stratum {
    listen: Option<String>,
    max_connections: Option<usize>,
    tag: Option<String>,
    min_difficulty: Option<f64>,
    #[serde(default)]
    allow_networks: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Upstream {
    name: Option<String>,
    pool_address: Option<String>,
}

/// Sets `vars` in the environment under a prefix of this test's own, so tests running at once
/// never see each other's, and reads `file` with them.
fn layers(prefix: &str, file: &str, vars: &[(&str, &str)]) -> Result<Layers, KeyErrors> {
    for (name, value) in vars {
        std::env::set_var(format!("{prefix}{name}"), value);
    }
    let layers = Layers::from_toml(file, "test.toml")?.with_env(prefix);
    for (name, _) in vars {
        std::env::remove_var(format!("{prefix}{name}"));
    }
    layers
}

fn read(prefix: &str, file: &str, vars: &[(&str, &str)]) -> Raw {
    let (raw, errors) = layers(prefix, file, vars).unwrap().extract::<Raw>();
    assert!(errors.0.is_empty(), "{errors}");
    raw.unwrap()
}

#[test]
fn a_variable_sets_its_key_over_the_file() {
    let file =
        "network = \"regtest\"\n[stratum]\nlisten = \"0.0.0.0:3333\"\nmax_connections = 10\n";
    let raw = read(
        "LT_A__",
        file,
        &[
            ("STRATUM__LISTEN", "127.0.0.1:4444"),
            (
                "STRATUM__ALLOW_NETWORKS",
                "[\"10.0.0.0/8\", \"192.168.1.7\"]",
            ),
            // Lower case works too: figment matches the prefix and keys case-insensitively.
            ("network", "signet"),
        ],
    );
    assert_eq!(raw.stratum.listen.as_deref(), Some("127.0.0.1:4444"));
    assert_eq!(
        raw.stratum.max_connections,
        Some(10),
        "the file's other keys stay"
    );
    assert_eq!(raw.stratum.allow_networks, ["10.0.0.0/8", "192.168.1.7"]);
    assert_eq!(raw.network.as_deref(), Some("signet"));
}

#[test]
fn a_value_is_taken_as_its_key_needs() {
    let raw = read(
        "LT_B__",
        "",
        &[
            ("STRATUM__TAG", "2024"),
            ("STRATUM__MIN_DIFFICULTY", "1e-6"),
            ("STRATUM__MAX_CONNECTIONS", "500"),
        ],
    );
    assert_eq!(raw.stratum.tag.as_deref(), Some("2024"), "digits stay text");
    assert_eq!(raw.stratum.min_difficulty, Some(1e-6));
    assert_eq!(raw.stratum.max_connections, Some(500));
}

#[test]
fn list_entries_are_named_by_index() {
    let file = "[[upstream]]\nname = \"main\"\npool_address = \"a:1\"\n[[upstream]]\nname = \"backup\"\npool_address = \"b:1\"\n";
    let raw = read(
        "LT_C__",
        file,
        &[
            ("UPSTREAM__1__POOL_ADDRESS", "b:2"),
            ("UPSTREAM__2__NAME", "third"),
            ("UPSTREAM__2__POOL_ADDRESS", "c:1"),
        ],
    );
    let got: Vec<(&str, &str)> = raw
        .upstream
        .iter()
        .map(|u| {
            let name = u.name.as_deref().unwrap_or("-");
            (name, u.pool_address.as_deref().unwrap_or("-"))
        })
        .collect();
    assert_eq!(got, [("main", "a:1"), ("backup", "b:2"), ("third", "c:1")]);

    // One [node] table is a list of one: index 0 is it, index 1 adds a backup.
    let raw = read(
        "LT_D__",
        "[node]\nrpc_url = \"http://a:8332\"\n",
        &[
            ("NODE__0__NAME", "core-1"),
            ("NODE__1__RPC_URL", "http://b:8332"),
        ],
    );
    assert_eq!(raw.node.0.len(), 2);
    assert_eq!(raw.node.0[0].name.as_deref(), Some("core-1"));
    assert_eq!(raw.node.0[0].rpc_url.as_deref(), Some("http://a:8332"));
    assert_eq!(raw.node.0[1].rpc_url.as_deref(), Some("http://b:8332"));
}

#[test]
fn a_whole_list_fits_in_one_variable() {
    let raw = read(
        "LT_E__",
        "[[upstream]]\nname = \"old\"\n",
        &[(
            "UPSTREAM",
            "[{name = \"a\", pool_address = \"a:1\"}, {name = \"b\", pool_address = \"b:1\"}]",
        )],
    );
    let names: Vec<_> = raw
        .upstream
        .iter()
        .filter_map(|u| u.name.as_deref())
        .collect();
    assert_eq!(names, ["a", "b"], "the variable replaces the file's list");
}

#[test]
fn a_variable_that_does_not_fit_the_shape_is_refused_by_name() {
    let file = "[[upstream]]\nname = \"main\"\n";
    let err = layers(
        "LT_F__",
        file,
        &[
            ("UPSTREAM__POOL_ADDRESS", "a:1"),
            ("UPSTREAM__3__NAME", "far"),
        ],
    )
    .unwrap_err();
    assert_eq!(err.0.len(), 2, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("LT_F__UPSTREAM__POOL_ADDRESS") && text.contains("give the entry's index"),
        "{text}"
    );
    assert!(
        text.contains("LT_F__UPSTREAM__3__NAME") && text.contains("the next entry is 1"),
        "{text}"
    );
}

#[test]
fn every_bad_key_is_reported_at_once_with_its_source() {
    let file = "[stratum]\nmax_connections = \"many\"\nlisen = \"x\"\n[[upstream]]\nname = \"a\"\npool_adress = \"a:1\"\n";
    let l = layers(
        "LT_G__",
        file,
        &[
            ("STRATUM__LISTN", "0.0.0.0:1"),
            ("STRATUM__MIN_DIFFICULTY", "low"),
            ("NETWORK", "regtest"),
        ],
    )
    .unwrap();
    let (raw, errors) = l.extract::<Raw>();
    let raw = raw.expect("the rest still reads");
    assert_eq!(raw.network.as_deref(), Some("regtest"));
    assert_eq!(raw.upstream[0].name.as_deref(), Some("a"));
    let text = errors.to_string();
    for line in [
        "config key `stratum.lisen` (from test.toml): unknown key; expected one of listen,",
        "config key `stratum.listn` (from LT_G__STRATUM__LISTN): unknown key",
        "config key `stratum.max_connections` (from test.toml): invalid type: found string \"many\"",
        "config key `stratum.min_difficulty` (from LT_G__STRATUM__MIN_DIFFICULTY): invalid type",
        "config key `upstream.0.pool_adress` (from test.toml): unknown key",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    assert_eq!(errors.0.len(), 5, "{text}");
}

#[test]
fn validation_errors_name_the_variable_and_skip_keys_already_reported() {
    let file = "network = \"regtest\"\n[server]\nmax_clients = \"x\"\n";
    let l = layers(
        "LT_H__",
        file,
        &[
            ("SERVER__LISTEN", "nowhere"),
            ("NODE__RPC_URL", "https://node"),
            ("POLICY__MIN_FEERATE", "-1"),
        ],
    )
    .unwrap();
    let err = l
        .load::<RawProviderConfig, _>(ProviderConfig::from_raw)
        .unwrap_err();
    let text = err.to_string();
    for line in [
        "config key `server.max_clients` (from test.toml): invalid type",
        "config key `server.listen` (from LT_H__SERVER__LISTEN): \"nowhere\"",
        "config key `node.rpc_url` (from LT_H__NODE__RPC_URL): must start with http://",
        "config key `policy` (from LT_H__POLICY__MIN_FEERATE): min_feerate",
        "config key `server.authority_public_key`: required",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    assert_eq!(
        err.0.len(),
        5,
        "max_clients, set aside, is not reported again as 0:\n{text}"
    );
    // A validation error on a key the operator did not set names no source.
    let e = l.attribute(
        ConfigErrors(vec![bad("coinbase.payout_address", "required")]),
        &KeyErrors::default(),
    );
    assert_eq!(e.0[0].origin, None);
}

#[test]
fn a_flag_goes_over_the_variable() {
    let l = layers("LT_I__", "", &[("STRATUM__LISTEN", "1.1.1.1:1")])
        .unwrap()
        .set("stratum.listen", "2.2.2.2:2", "--listen")
        .unwrap();
    let (raw, _) = l.extract::<Raw>();
    assert_eq!(raw.unwrap().stratum.listen.as_deref(), Some("2.2.2.2:2"));
    assert_eq!(
        l.origin(&["stratum", "listen"]).as_deref(),
        Some("--listen"),
        "the flag's value is the one in force"
    );
}

#[test]
fn a_file_that_is_not_toml_is_refused_with_the_line() {
    let err = Layers::from_toml("[stratum\nlisten = 1\n", "farm.toml").unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("farm.toml: TOML parse error at line 1"),
        "{text}"
    );
}

#[test]
fn changes_list_each_key_that_differs() {
    let before = Layers::from_toml(
        "[vardiff]\nmin_difficulty = 1.0\n[policy]\nexclude_txids = []\n[stratum]\nlisten = \"a\"\n",
        "f",
    )
    .unwrap();
    let after = Layers::from_toml(
        "[vardiff]\nmin_difficulty = 2.0\nretarget_secs = 5\n[policy]\nexclude_txids = [\"ab\"]\n[stratum]\nlisten = \"a\"\n",
        "f",
    )
    .unwrap();
    let c = changes(before.tree(), after.tree());
    let shown: Vec<String> = c.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "policy.exclude_txids: [] -> [\"ab\"]",
            "vardiff.min_difficulty: 1.0 -> 2.0",
            "vardiff.retarget_secs: (unset) -> 5",
        ]
    );
    assert!(c[0].in_section("policy") && !c[0].in_section("pol"));
    assert!(changes(before.tree(), before.tree()).is_empty());
}
