//! `[[route]]` and `[routing]`: which ASICs mine for which upstreams, checked into the
//! [`RouteSpec`]s the router places ASICs by.
//!
//! Without any `[[route]]` the farm is one route, `default`, with every `[[upstream]]` in file
//! order: exactly the farm without routing.

use std::collections::HashMap;
use std::time::Duration;

use ledger_math::customers::{Customer, CustomerMap, WorkerPattern};
use serde::Deserialize;

use super::{bad, ConfigError, ConfigErrors, UpstreamConfig};
use crate::routing::rules::{Matcher, RouteSpec};
use crate::sv1::admission::parse_net;

/// The route the farm is without any `[[route]]`.
pub const DEFAULT_ROUTE: &str = "default";

/// One `[[route]]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// For logs, metrics and the API.
    pub name: Option<String>,
    /// Worker-name patterns (`alice.*`, `rig-?`, exact names).
    #[serde(default)]
    pub workers: Vec<String>,
    /// A customer of `[[customer]]` (or `ledger.default_customer`).
    pub customer: Option<String>,
    /// Source networks (`10.7.0.0/16`) or addresses.
    #[serde(default)]
    pub networks: Vec<String>,
    /// A share of the ASICs no other route matches, in proportion to the weights.
    pub weight: Option<f64>,
    /// Names of `[[upstream]]` entries, most preferred first; `[]`: solo only.
    pub upstreams: Option<Vec<String>>,
}

/// `[routing]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouting {
    /// How often the weighted split is checked and ASICs moved, seconds.
    pub rebalance_secs: Option<u64>,
    /// How far (percent of the farm) a weighted route may drift before ASICs are moved.
    pub tolerance_percent: Option<f64>,
}

/// `[routing]`, checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoutingConfig {
    /// How often the weighted split is checked.
    pub rebalance: Duration,
    /// The drift (a fraction of the farm) that moves ASICs.
    pub tolerance: f64,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            rebalance: Duration::from_secs(60),
            tolerance: 0.02,
        }
    }
}

impl RoutingConfig {
    /// Checks `[routing]`.
    ///
    /// # Errors
    /// Every bad key, named.
    pub fn from_raw(raw: &RawRouting) -> Result<Self, ConfigErrors> {
        let mut e = ConfigErrors::default();
        let rebalance = e.take(super::secs(
            raw.rebalance_secs,
            60,
            "routing.rebalance_secs",
        ));
        let percent = raw.tolerance_percent.unwrap_or(2.0);
        if !(percent.is_finite() && percent > 0.0 && percent <= 50.0) {
            e.push(bad(
                "routing.tolerance_percent",
                format!("{percent}: give a percentage above 0, at most 50"),
            ));
        }
        match rebalance {
            Some(rebalance) if e.is_empty() => Ok(RoutingConfig {
                rebalance,
                tolerance: percent / 100.0,
            }),
            _ => Err(e),
        }
    }
}

/// `[[route]]` and `[routing]` of the file.
///
/// # Errors
/// Every bad key, named.
pub fn from_raw(
    raw: &[RawRoute],
    routing: &RawRouting,
    upstreams: &[UpstreamConfig],
    customers: &CustomerMap,
) -> Result<(Vec<RouteSpec>, RoutingConfig), ConfigErrors> {
    let mut e = ConfigErrors::default();
    let routes = e.take_all(routes(raw, upstreams, customers));
    let routing = e.take_all(RoutingConfig::from_raw(routing));
    match (routes, routing) {
        (Some(r), Some(g)) => Ok((r, g)),
        _ => Err(e),
    }
}

/// The routes: `[[route]]` checked against the `[[upstream]]` names and the customers, or the
/// one implicit route over every upstream.
///
/// # Errors
/// Every bad route, each naming its key and the route.
pub fn routes(
    raw: &[RawRoute],
    upstreams: &[UpstreamConfig],
    customers: &CustomerMap,
) -> Result<Vec<RouteSpec>, ConfigErrors> {
    if raw.is_empty() {
        return Ok(vec![RouteSpec {
            name: DEFAULT_ROUTE.to_owned(),
            matcher: Matcher::Default,
            upstreams: (0..upstreams.len()).collect(),
        }]);
    }
    let mut e = ConfigErrors::default();
    let by_name = upstream_names(upstreams, &mut e);
    let mut routes = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    for (i, r) in raw.iter().enumerate() {
        let entry = i + 1;
        let name = e.take(route_name(r.name.as_deref(), entry));
        if let Some(n) = &name {
            if let Some(first) = names.insert(n.clone(), entry) {
                let problem = format!("{n:?} names entries {first} and {entry}: names must differ");
                e.push(bad("route.name", problem));
            }
        }
        let label = name.clone().unwrap_or_else(|| format!("entry {entry}"));
        let matcher = e.take_all(matcher(r, &label, customers));
        let ups = e.take(route_upstreams(r.upstreams.as_deref(), &label, &by_name));
        if let (Some(name), Some(matcher), Some(upstreams)) = (name, matcher, ups) {
            routes.push(RouteSpec {
                name,
                matcher,
                upstreams,
            });
        }
    }
    if e.is_empty() {
        e.take(catch_all(&routes));
    }
    if e.is_empty() {
        Ok(routes)
    } else {
        Err(e)
    }
}

/// `[[upstream]]` indices by name; a name given twice is refused (routes pick by name).
fn upstream_names<'a>(
    upstreams: &'a [UpstreamConfig],
    e: &mut ConfigErrors,
) -> HashMap<&'a str, usize> {
    let mut by_name = HashMap::new();
    for (i, u) in upstreams.iter().enumerate() {
        if by_name.insert(u.name.as_str(), i).is_some() {
            let problem = format!(
                "{:?} names two [[upstream]] entries; routes pick upstreams by name",
                u.name
            );
            e.push(bad("upstream.name", problem));
        }
    }
    by_name
}

fn route_name(name: Option<&str>, entry: usize) -> Result<String, ConfigError> {
    let Some(name) = name else {
        return Err(bad("route.name", format!("entry {entry} has no name")));
    };
    if name.is_empty()
        || name.chars().count() > 64
        || name.trim() != name
        || name.chars().any(char::is_control)
    {
        let problem = format!(
            "entry {entry}: {name:?}: 1 to 64 characters, no surrounding spaces or control characters"
        );
        return Err(bad("route.name", problem));
    }
    Ok(name.to_owned())
}

/// What decides who mines for the route: a weight, or matchers, or nothing (the default).
fn matcher(r: &RawRoute, label: &str, customers: &CustomerMap) -> Result<Matcher, ConfigErrors> {
    let mut e = ConfigErrors::default();
    let has_matchers = !r.workers.is_empty() || r.customer.is_some() || !r.networks.is_empty();
    if let Some(w) = r.weight {
        if has_matchers {
            let problem = format!("route {label:?} has a weight and workers, customer or networks: a weighted route takes a share of the ASICs no other route matches; give one or the other");
            return Err(bad("route.weight", problem).into());
        }
        if !(w.is_finite() && w > 0.0) {
            let problem = format!("route {label:?}: {w} is not a positive number");
            return Err(bad("route.weight", problem).into());
        }
        return Ok(Matcher::Weight(w));
    }
    if !has_matchers {
        return Ok(Matcher::Default);
    }
    let workers = r
        .workers
        .iter()
        .filter_map(|w| {
            let p = WorkerPattern::parse(w)
                .map_err(|x| bad("route.workers", format!("route {label:?}: {w:?}: {x}")));
            e.take(p)
        })
        .collect();
    let customer = r
        .customer
        .as_deref()
        .and_then(|c| e.take(known_customer(c, label, customers)));
    let networks = r
        .networks
        .iter()
        .filter_map(|n| {
            e.take(parse_net(n).map_err(|x| bad("route.networks", format!("route {label:?}: {x}"))))
        })
        .collect();
    if !e.is_empty() {
        return Err(e);
    }
    Ok(Matcher::Fixed {
        workers,
        customer,
        networks,
    })
}

fn known_customer(
    name: &str,
    label: &str,
    customers: &CustomerMap,
) -> Result<Customer, ConfigError> {
    let known = customers.customers();
    match known.iter().find(|c| c.as_str() == name) {
        Some(c) => Ok((*c).clone()),
        None => {
            let list: Vec<&str> = known.iter().map(|c| c.as_str()).collect();
            let problem = format!(
                "route {label:?}: no customer {name:?} (the [[customer]] names and ledger.default_customer: {})",
                list.join(", ")
            );
            Err(bad("route.customer", problem))
        }
    }
}

fn route_upstreams(
    names: Option<&[String]>,
    label: &str,
    by_name: &HashMap<&str, usize>,
) -> Result<Vec<usize>, ConfigError> {
    let Some(names) = names else {
        let problem = format!("route {label:?}: required: the [[upstream]] names it mines for, most preferred first ([] for solo only)");
        return Err(bad("route.upstreams", problem));
    };
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        let Some(&i) = by_name.get(n.as_str()) else {
            let mut known: Vec<&&str> = by_name.keys().collect();
            known.sort();
            let problem = format!(
                "route {label:?}: no [[upstream]] named {n:?} (named: {})",
                known
                    .iter()
                    .map(|k| format!("{k:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            return Err(bad("route.upstreams", problem));
        };
        if out.contains(&i) {
            let problem = format!("route {label:?}: {n:?} is listed twice");
            return Err(bad("route.upstreams", problem));
        }
        out.push(i);
    }
    Ok(out)
}

/// Every ASIC must have somewhere to go: one default route, or weighted routes (not both: the
/// weighted ones take everything a default would).
fn catch_all(routes: &[RouteSpec]) -> Result<(), ConfigError> {
    let defaults: Vec<&str> = routes
        .iter()
        .filter(|r| r.matcher == Matcher::Default)
        .map(|r| r.name.as_str())
        .collect();
    let weighted = routes
        .iter()
        .any(|r| matches!(r.matcher, Matcher::Weight(_)));
    match (defaults.as_slice(), weighted) {
        ([], false) => Err(bad(
            "route",
            "no route takes the ASICs the others do not match: add one without workers, customer and networks (the default), or weighted routes",
        )),
        ([_], false) | ([], true) => Ok(()),
        ([d, ..], true) => Err(bad(
            "route.weight",
            format!("route {d:?} has no weight, workers, customer or networks, but weighted routes take every ASIC no other route matches: give it a weight, or matchers"),
        )),
        ([a, b, ..], false) => Err(bad(
            "route",
            format!("routes {a:?} and {b:?} both take every ASIC (no workers, customer, networks or weight): keep one"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::raw::RawConfig;
    use crate::config::Config;
    use crate::routing::rules::Matcher;

    const BASE: &str = "network = \"regtest\"\n[coinbase]\npayout_address = \"bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080\"\n";
    const KEY: &str = "9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72";

    fn pools() -> String {
        ["a", "b"]
            .iter()
            .map(|n| format!("[[upstream]]\nname = \"{n}\"\npool_address = \"{n}:1\"\npool_authority_public_key = \"{KEY}\"\n"))
            .collect()
    }

    fn parse(extra: &str) -> Result<Config, String> {
        let text = format!(
            "{BASE}{}[[customer]]\nname = \"alice\"\nworkers = [\"alice.*\"]\n{extra}",
            pools()
        );
        let raw: RawConfig = toml::from_str(&text).map_err(|e| e.to_string())?;
        Config::from_raw(raw).map_err(|e| e.to_string())
    }

    #[test]
    fn without_routes_the_farm_is_one_route_over_every_upstream() {
        let c = parse("").unwrap();
        assert_eq!(c.routes.len(), 1);
        assert_eq!(c.routes[0].name, "default");
        assert_eq!(c.routes[0].matcher, Matcher::Default);
        assert_eq!(c.routes[0].upstreams, vec![0, 1]);
        assert_eq!(c.routing.rebalance.as_secs(), 60);
    }

    #[test]
    fn routes_name_their_upstreams_in_order() {
        let c = parse(
            "[[route]]\nname = \"alice\"\ncustomer = \"alice\"\nupstreams = [\"b\"]\n\
             [[route]]\nname = \"main\"\nweight = 70\nupstreams = [\"a\", \"b\"]\n\
             [[route]]\nname = \"hedge\"\nweight = 30\nupstreams = []\n\
             [routing]\nrebalance_secs = 5\ntolerance_percent = 1\n",
        )
        .unwrap();
        let names: Vec<&str> = c.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["alice", "main", "hedge"]);
        assert_eq!(c.routes[0].upstreams, vec![1]);
        assert_eq!(c.routes[1].upstreams, vec![0, 1]);
        assert!(c.routes[2].upstreams.is_empty(), "solo only");
        assert_eq!(c.routes[1].matcher, Matcher::Weight(70.0));
        assert!((c.routing.tolerance - 0.01).abs() < 1e-12);
    }

    #[test]
    fn bad_routes_are_refused_naming_the_key() {
        let w = |name: &str, weight: &str| {
            format!("[[route]]\nname = \"{name}\"\nweight = {weight}\nupstreams = [\"a\"]\n")
        };
        for (extra, key, words) in [
            (w("x", "0"), "route.weight", "not a positive"),
            (w("x", "-3"), "route.weight", "not a positive"),
            (
                "[[route]]\nname = \"x\"\nweight = 1\nworkers = [\"a.*\"]\nupstreams = [\"a\"]\n".into(),
                "route.weight",
                "a weight and workers",
            ),
            (
                "[[route]]\nname = \"x\"\nupstreams = [\"nope\"]\n".into(),
                "route.upstreams",
                "no [[upstream]] named \"nope\"",
            ),
            ("[[route]]\nname = \"x\"\n".into(), "route.upstreams", "required"),
            (format!("{}{}", w("x", "1"), w("x", "2")), "route.name", "names entries 1 and 2"),
            (
                "[[route]]\nname = \"x\"\nworkers = [\"a.*\"]\nupstreams = [\"a\"]\n".into(),
                "route",
                "no route takes",
            ),
            (
                "[[route]]\nname = \"x\"\ncustomer = \"carol\"\nupstreams = [\"a\"]\n".into(),
                "route.customer",
                "no customer \"carol\"",
            ),
            (
                "[[route]]\nname = \"x\"\nnetworks = [\"10.0.0.0/33\"]\nupstreams = [\"a\"]\n".into(),
                "route.networks",
                "not a network",
            ),
            (
                format!("{}[[route]]\nname = \"d\"\nupstreams = [\"a\"]\n", w("x", "1")),
                "route.weight",
                "\"d\" has no weight",
            ),
            (
                "[[route]]\nname = \"d\"\nupstreams = [\"a\"]\n[[route]]\nname = \"e\"\nupstreams = []\n".into(),
                "route",
                "both take every ASIC",
            ),
            (
                "[[route]]\nname = \"x\"\nupstreams = [\"a\", \"a\"]\n".into(),
                "route.upstreams",
                "listed twice",
            ),
            ("[[route]]\nupstreams = []\n".into(), "route.name", "no name"),
            ("[routing]\ntolerance_percent = 0\n".into(), "routing.tolerance_percent", "above 0"),
        ] {
            let err = parse(&extra).unwrap_err();
            assert!(
                err.contains(&format!("config key `{key}`")) && err.contains(words),
                "{extra}\n=> {err}"
            );
        }
    }
}
