//! Who may connect: the ASIC networks allowed (all, unless listed) and how many connections one
//! source address may hold (farms behind NAT list their gateways as exempt). Pure: no sockets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use ipnet::IpNet;

/// The rules.
#[derive(Debug, Clone, Default)]
pub struct AdmissionConfig {
    /// Only these networks may connect; empty: any.
    pub allow: Vec<IpNet>,
    /// Connections one address may hold; 0: no cap.
    pub max_per_ip: usize,
    /// Addresses the cap does not apply to (NAT gateways with many ASICs behind them).
    pub exempt: Vec<IpNet>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its address is outside the allowed networks.
    NotAllowed,
    /// Its address holds the most connections allowed.
    PerIp,
    /// The proxy holds the most connections allowed.
    Full,
}

impl Refusal {
    /// For logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NotAllowed => "address not in stratum.allow_networks",
            Refusal::PerIp => {
                "too many connections from one address (stratum.max_connections_per_ip)"
            }
            Refusal::Full => "connection limit reached (stratum.max_connections)",
        }
    }
}

/// Connections held per address.
#[derive(Debug)]
pub struct Admission {
    config: AdmissionConfig,
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// A connection's place, given back when dropped.
#[derive(Debug)]
pub struct Admitted {
    admission: Arc<Admission>,
    /// `None` for an exempt address: nothing to give back.
    ip: Option<IpAddr>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let Some(ip) = self.ip else { return };
        let mut held = self.admission.lock();
        if let Some(n) = held.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                held.remove(&ip);
            }
        }
    }
}

impl Admission {
    /// Admission under `config`.
    pub fn new(config: AdmissionConfig) -> Arc<Self> {
        Arc::new(Admission {
            config,
            held: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a connection from `ip`, or says why not.
    ///
    /// # Errors
    /// The [`Refusal`].
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Refusal> {
        let ip = ip.to_canonical();
        let c = &self.config;
        if !c.allow.is_empty() && !c.allow.iter().any(|n| n.contains(&ip)) {
            return Err(Refusal::NotAllowed);
        }
        if c.max_per_ip == 0 || c.exempt.iter().any(|n| n.contains(&ip)) {
            return Ok(Admitted {
                admission: self.clone(),
                ip: None,
            });
        }
        let mut held = self.lock();
        let n = held.entry(ip).or_default();
        if *n >= c.max_per_ip {
            return Err(Refusal::PerIp);
        }
        *n += 1;
        Ok(Admitted {
            admission: self.clone(),
            ip: Some(ip),
        })
    }

    /// Addresses holding connections now.
    pub fn addresses(&self) -> usize {
        self.lock().len()
    }
}

/// Reads a network or a single address (`10.0.0.0/8`, `192.168.1.7`, `::1`).
///
/// # Errors
/// Neither.
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is not a network (10.0.0.0/8) or an address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter()
            .map(|s| parse_net(s).expect("a network"))
            .collect()
    }

    #[test]
    fn only_allowed_networks_get_in() {
        let a = Admission::new(AdmissionConfig {
            allow: nets(&["10.0.0.0/8", "192.168.1.7"]),
            ..AdmissionConfig::default()
        });
        assert!(a.admit(ip("10.3.4.5")).is_ok());
        assert!(a.admit(ip("192.168.1.7")).is_ok());
        assert_eq!(a.admit(ip("192.168.1.8")).unwrap_err(), Refusal::NotAllowed);
        // An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d.
        assert!(a.admit(ip("::ffff:10.0.0.1")).is_ok());
    }

    #[test]
    fn one_address_holds_at_most_the_cap_and_gets_it_back() {
        let a = Admission::new(AdmissionConfig {
            max_per_ip: 2,
            exempt: nets(&["172.16.0.1"]),
            ..AdmissionConfig::default()
        });
        let one = a.admit(ip("1.2.3.4")).expect("first");
        let _two = a.admit(ip("1.2.3.4")).expect("second");
        assert_eq!(a.admit(ip("1.2.3.4")).unwrap_err(), Refusal::PerIp);
        assert!(
            a.admit(ip("1.2.3.5")).is_ok(),
            "other addresses are not affected"
        );
        drop(one);
        assert!(
            a.admit(ip("1.2.3.4")).is_ok(),
            "a closed connection frees its place"
        );
        let nat: Vec<Admitted> = (0..10)
            .map(|_| a.admit(ip("172.16.0.1")).expect("exempt"))
            .collect();
        assert_eq!(nat.len(), 10);
    }

    #[test]
    fn addresses_are_forgotten_when_their_last_connection_goes() {
        let a = Admission::new(AdmissionConfig {
            max_per_ip: 5,
            ..AdmissionConfig::default()
        });
        let c = a.admit(ip("1.2.3.4")).expect("in");
        assert_eq!(a.addresses(), 1);
        drop(c);
        assert_eq!(a.addresses(), 0);
        assert!(parse_net("nope").is_err());
    }
}
