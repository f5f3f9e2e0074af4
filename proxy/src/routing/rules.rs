//! Which route an ASIC belongs to. Pure: the table is built from the config once, and asked
//! with a worker name and a source address.
//!
//! Routes with matchers (worker-name patterns, a customer, source networks) are tried in order
//! and the first that matches wins; within one route every matcher given must match. ASICs no
//! such route takes are shared among the weighted routes by hashrate, or, without weighted
//! routes, go to the default route.

use std::net::IpAddr;

use ipnet::IpNet;
use ledger_math::customers::{Customer, CustomerMap, WorkerPattern};

/// What decides that an ASIC mines for a route.
#[derive(Debug, Clone, PartialEq)]
pub enum Matcher {
    /// Worker names, source networks and a customer; each given one must match.
    Fixed {
        /// Any of these worker-name patterns (none: any name).
        workers: Vec<WorkerPattern>,
        /// The worker's customer (from the `[[customer]]` patterns), if given.
        customer: Option<Customer>,
        /// Any of these networks (none: any address).
        networks: Vec<IpNet>,
    },
    /// A share of the ASICs no fixed route takes, in proportion to the weight.
    Weight(f64),
    /// Whatever no other route takes.
    Default,
}

/// One route: its name, matcher, and upstreams (indices into `[[upstream]]`, in failover
/// order; solo comes after the last).
#[derive(Debug, Clone, PartialEq)]
pub struct RouteSpec {
    /// For logs, metrics and the API.
    pub name: String,
    /// Who mines for it.
    pub matcher: Matcher,
    /// Its pools, most preferred first.
    pub upstreams: Vec<usize>,
}

/// Where an ASIC goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// This route.
    Route(usize),
    /// One of the weighted routes, by the split.
    Weighted,
}

/// Every route, in order.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<RouteSpec>,
    customers: CustomerMap,
}

impl RouteTable {
    /// A table of `routes` (validated by the config), with `customers` for customer matchers.
    pub fn new(routes: Vec<RouteSpec>, customers: CustomerMap) -> Self {
        RouteTable { routes, customers }
    }

    /// The routes.
    pub fn routes(&self) -> &[RouteSpec] {
        &self.routes
    }

    /// The weighted routes' indices and weights.
    pub fn weighted(&self) -> Vec<(usize, f64)> {
        self.routes
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match r.matcher {
                Matcher::Weight(w) => Some((i, w)),
                _ => None,
            })
            .collect()
    }

    /// Where an ASIC authorized as `worker` from `ip` goes.
    pub fn place(&self, worker: &str, ip: IpAddr) -> Placement {
        for (i, r) in self.routes.iter().enumerate() {
            if let Matcher::Fixed {
                workers,
                customer,
                networks,
            } = &r.matcher
            {
                let by_name = workers.is_empty() || workers.iter().any(|p| p.matches(worker));
                let by_net = networks.is_empty() || networks.iter().any(|n| n.contains(&ip));
                let by_customer = customer
                    .as_ref()
                    .is_none_or(|c| self.customers.customer_of(worker) == c);
                if by_name && by_net && by_customer {
                    return Placement::Route(i);
                }
            }
        }
        if self
            .routes
            .iter()
            .any(|r| matches!(r.matcher, Matcher::Weight(_)))
        {
            return Placement::Weighted;
        }
        let default = self
            .routes
            .iter()
            .position(|r| r.matcher == Matcher::Default)
            .unwrap_or(0);
        Placement::Route(default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger_math::customers::CustomerRule;

    fn fixed(workers: &[&str], customer: Option<&str>, networks: &[&str]) -> Matcher {
        Matcher::Fixed {
            workers: workers
                .iter()
                .map(|w| WorkerPattern::parse(w).expect("pattern"))
                .collect(),
            customer: customer.map(|c| Customer::new(c).expect("customer")),
            networks: networks.iter().map(|n| n.parse().expect("net")).collect(),
        }
    }

    fn route(name: &str, matcher: Matcher) -> RouteSpec {
        RouteSpec {
            name: name.into(),
            matcher,
            upstreams: vec![0],
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn the_first_fixed_route_that_matches_wins_and_the_rest_are_weighted() {
        let customers = CustomerMap::new(
            &[CustomerRule {
                pattern: "bob.*".into(),
                customer: "bob".into(),
            }],
            "farm",
        )
        .expect("customers");
        let table = RouteTable::new(
            vec![
                route("alice", fixed(&["alice.*"], None, &[])),
                route("bob", fixed(&[], Some("bob"), &[])),
                route("rack-7", fixed(&[], None, &["10.7.0.0/16"])),
                route("a", Matcher::Weight(70.0)),
                route("b", Matcher::Weight(30.0)),
            ],
            customers,
        );
        assert_eq!(
            table.place("alice.s19", ip("10.7.0.9")),
            Placement::Route(0)
        );
        assert_eq!(table.place("bob.m30", ip("10.1.0.1")), Placement::Route(1));
        assert_eq!(table.place("farm.x", ip("10.7.3.3")), Placement::Route(2));
        assert_eq!(table.place("farm.x", ip("10.8.3.3")), Placement::Weighted);
        assert_eq!(table.weighted(), vec![(3, 70.0), (4, 30.0)]);
    }

    #[test]
    fn every_matcher_of_a_route_must_match_and_the_default_takes_the_rest() {
        let table = RouteTable::new(
            vec![
                route("alice-rack", fixed(&["alice.*"], None, &["10.7.0.0/16"])),
                route("default", Matcher::Default),
            ],
            CustomerMap::new(&[], "farm").expect("customers"),
        );
        assert_eq!(table.place("alice.1", ip("10.7.0.1")), Placement::Route(0));
        assert_eq!(table.place("alice.1", ip("10.9.0.1")), Placement::Route(1));
        assert_eq!(table.place("bob.1", ip("10.7.0.1")), Placement::Route(1));
    }
}
