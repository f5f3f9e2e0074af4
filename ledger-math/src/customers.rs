//! Who owns a worker: worker-name patterns mapped to customers, first match wins.
//!
//! A hosting farm names its customers' machines by convention (`alice.rig01`, `bob-s19-7`), so
//! a short ordered list of patterns covers them:
//!
//! - a pattern without `*` or `?` matches that exact worker name;
//! - `*` matches any run of characters (none included), `?` exactly one: `alice.*`, `bob-s19-?`;
//! - matching is case-sensitive, as Stratum worker names are.
//!
//! Rules are checked once, when loaded: an empty pattern, a character this syntax does not have
//! (`[`, `]`, `{`, `}`, `\`), a pattern given twice, or a rule that an earlier one hides
//! entirely (anything after a lone `*`, an exact name an earlier glob already matches) is an
//! error naming the rule. Workers no rule matches belong to the default customer.
//!
//! The ledger sums work per customer with it, and routing (issue 13) picks a pool per customer
//! with the same [`CustomerMap`].

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::units::Work;

/// A customer's name: not empty, no surrounding spaces, no control characters, at most 64
/// characters. Names sort as strings, which fixes the order of a split's rows.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Customer(String);

/// A customer name that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("customer name {name:?} {why}")]
pub struct CustomerError {
    /// The name given.
    pub name: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl Customer {
    /// Checks and wraps a customer name.
    ///
    /// # Errors
    /// When the name is empty, has leading or trailing spaces, a control character, or more
    /// than 64 characters (it ends up in CSV files and payment runs).
    pub fn new(name: &str) -> Result<Self, CustomerError> {
        let why = if name.is_empty() {
            Some("is empty")
        } else if name.trim() != name {
            Some("has leading or trailing spaces")
        } else if name.chars().any(char::is_control) {
            Some("has a control character")
        } else if name.chars().count() > 64 {
            Some("is longer than 64 characters")
        } else {
            None
        };
        match why {
            Some(why) => Err(CustomerError {
                name: name.to_owned(),
                why,
            }),
            None => Ok(Customer(name.to_owned())),
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Customer {
    type Error = CustomerError;
    fn try_from(s: String) -> Result<Self, CustomerError> {
        Customer::new(&s)
    }
}

impl From<Customer> for String {
    fn from(c: Customer) -> String {
        c.0
    }
}

impl FromStr for Customer {
    type Err = CustomerError;
    fn from_str(s: &str) -> Result<Self, CustomerError> {
        Customer::new(s)
    }
}

impl fmt::Display for Customer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A compiled worker-name pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerPattern {
    text: String,
    /// `None` for an exact name.
    glob: Option<Vec<Token>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Char(char),
    AnyOne,
    AnyRun,
}

/// A pattern that cannot be compiled.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PatternError {
    /// Nothing to match.
    #[error("the pattern is empty")]
    Empty,
    /// A character of richer glob syntaxes that this one does not have.
    #[error(
        "{0:?} is not supported in worker patterns: use * (any characters) and ? (one character)"
    )]
    Unsupported(char),
}

impl WorkerPattern {
    /// Compiles a pattern (see the module docs for the syntax).
    ///
    /// # Errors
    /// When it is empty or uses `[`, `]`, `{`, `}` or `\`.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        if let Some(c) = text
            .chars()
            .find(|c| matches!(c, '[' | ']' | '{' | '}' | '\\'))
        {
            return Err(PatternError::Unsupported(c));
        }
        let glob = text.contains(['*', '?']).then(|| {
            text.chars()
                .map(|c| match c {
                    '*' => Token::AnyRun,
                    '?' => Token::AnyOne,
                    c => Token::Char(c),
                })
                .collect()
        });
        Ok(WorkerPattern {
            text: text.to_owned(),
            glob,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether it is an exact name (no `*` or `?`).
    pub fn is_exact(&self) -> bool {
        self.glob.is_none()
    }

    /// Whether it matches every name (only `*`s).
    pub fn matches_everything(&self) -> bool {
        self.glob
            .as_ref()
            .is_some_and(|g| g.iter().all(|t| *t == Token::AnyRun))
    }

    /// Whether `worker` matches.
    pub fn matches(&self, worker: &str) -> bool {
        match &self.glob {
            None => self.text == worker,
            Some(tokens) => glob_match(tokens, &worker.chars().collect::<Vec<_>>()),
        }
    }
}

/// Wildcard matching with one backtrack point (the last `*`): linear in practice, at worst
/// `O(pattern × name)`, with no recursion.
fn glob_match(pattern: &[Token], name: &[char]) -> bool {
    let (mut p, mut n) = (0, 0);
    // Where the last `*` was, and the name position it is currently taken to end at.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(Token::AnyRun) => {
                star = Some((p, n));
                p += 1;
            }
            Some(Token::AnyOne) => (p, n) = (p + 1, n + 1),
            Some(Token::Char(c)) if *c == name[n] => (p, n) = (p + 1, n + 1),
            _ => match star {
                // Let the last `*` swallow one more character and retry from after it.
                Some((sp, sn)) => {
                    star = Some((sp, sn + 1));
                    (p, n) = (sp + 1, sn + 1);
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|t| *t == Token::AnyRun)
}

/// One rule as written in the config or a table: a worker pattern and the customer it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerRule {
    /// `alice.*`, `bob-s19-?` or an exact worker name.
    pub pattern: String,
    /// The customer's name.
    pub customer: String,
}

/// Ordered rules from worker name to customer, with a default. Built by [`CustomerMap::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerMap {
    rules: Vec<(WorkerPattern, Customer)>,
    default: Customer,
}

/// A rule that cannot be loaded, with its place in the list (counted from 1).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CustomerMapError {
    /// The pattern does not compile.
    #[error("customer rule {rule} (pattern {pattern:?}): {source}")]
    Pattern {
        /// The rule's place.
        rule: usize,
        /// Its pattern.
        pattern: String,
        /// Why.
        source: PatternError,
    },
    /// The customer's name is not usable.
    #[error("customer rule {rule} (pattern {pattern:?}): {source}")]
    Customer {
        /// The rule's place.
        rule: usize,
        /// Its pattern.
        pattern: String,
        /// Why.
        source: CustomerError,
    },
    /// An earlier rule matches every worker this one would.
    #[error("customer rule {rule} (pattern {pattern:?}) can never match: rule {earlier} ({earlier_pattern:?}) comes first and matches every worker it would")]
    Hidden {
        /// The rule's place.
        rule: usize,
        /// Its pattern.
        pattern: String,
        /// The earlier rule's place.
        earlier: usize,
        /// The earlier rule's pattern.
        earlier_pattern: String,
    },
    /// The default customer's name is not usable.
    #[error("default customer: {0}")]
    Default(CustomerError),
}

impl CustomerMap {
    /// Compiles the rules, in order, and the default customer.
    ///
    /// # Errors
    /// On the first rule whose pattern or customer is invalid, or that an earlier rule hides;
    /// or when the default's name is invalid.
    pub fn new(rules: &[CustomerRule], default: &str) -> Result<Self, CustomerMapError> {
        let default = Customer::new(default).map_err(CustomerMapError::Default)?;
        let mut compiled: Vec<(WorkerPattern, Customer)> = Vec::with_capacity(rules.len());
        for (i, rule) in rules.iter().enumerate() {
            let (num, pattern) = (i + 1, rule.pattern.clone());
            let p = WorkerPattern::parse(&rule.pattern).map_err(|source| {
                CustomerMapError::Pattern {
                    rule: num,
                    pattern: pattern.clone(),
                    source,
                }
            })?;
            let c = Customer::new(&rule.customer).map_err(|source| CustomerMapError::Customer {
                rule: num,
                pattern: pattern.clone(),
                source,
            })?;
            if let Some(j) = compiled.iter().position(|(earlier, _)| hides(earlier, &p)) {
                return Err(CustomerMapError::Hidden {
                    rule: num,
                    pattern,
                    earlier: j + 1,
                    earlier_pattern: compiled[j].0.as_str().to_owned(),
                });
            }
            compiled.push((p, c));
        }
        Ok(CustomerMap {
            rules: compiled,
            default,
        })
    }

    /// Every worker to the default customer: a farm that hosts nobody.
    pub fn single(default: Customer) -> Self {
        CustomerMap {
            rules: Vec::new(),
            default,
        }
    }

    /// The customer who owns `worker`: the first matching rule's, else the default.
    pub fn customer_of(&self, worker: &str) -> &Customer {
        self.rules
            .iter()
            .find(|(p, _)| p.matches(worker))
            .map_or(&self.default, |(_, c)| c)
    }

    /// The customer of workers no rule matches.
    pub fn default_customer(&self) -> &Customer {
        &self.default
    }

    /// The rules, in order.
    pub fn rules(&self) -> impl Iterator<Item = (&WorkerPattern, &Customer)> {
        self.rules.iter().map(|(p, c)| (p, c))
    }

    /// Sums work per customer from work per worker (a worker may come more than once: one row
    /// per bucket or per gateway). Every customer of the map is listed, with zero work if none
    /// of their workers was seen, so a payment run names everyone.
    pub fn sum_work<'a>(
        &self,
        per_worker: impl IntoIterator<Item = (&'a str, Work)>,
    ) -> BTreeMap<Customer, Work> {
        let mut sums: BTreeMap<Customer, Work> = self
            .customers()
            .into_iter()
            .map(|c| (c.clone(), Work::ZERO))
            .collect();
        for (worker, work) in per_worker {
            *sums
                .entry(self.customer_of(worker).clone())
                .or_insert(Work::ZERO) += work;
        }
        sums
    }

    /// Every customer named, default included, each once, sorted.
    pub fn customers(&self) -> Vec<&Customer> {
        let mut all: Vec<&Customer> = self.rules.iter().map(|(_, c)| c).collect();
        all.push(&self.default);
        all.sort();
        all.dedup();
        all
    }
}

/// Whether `earlier` matches every name `later` can (the cases decidable at a glance).
fn hides(earlier: &WorkerPattern, later: &WorkerPattern) -> bool {
    earlier.text == later.text
        || earlier.matches_everything()
        || (later.is_exact() && earlier.matches(&later.text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pattern: &str, customer: &str) -> CustomerRule {
        CustomerRule {
            pattern: pattern.to_owned(),
            customer: customer.to_owned(),
        }
    }

    fn m(p: &str, name: &str) -> bool {
        WorkerPattern::parse(p).unwrap().matches(name)
    }

    #[test]
    fn glob_semantics() {
        assert!(m("alice.*", "alice.rig01"));
        assert!(m("alice.*", "alice."));
        assert!(!m("alice.*", "alice"));
        assert!(!m("alice.*", "xalice.rig"));
        assert!(!m("alice.*", "Alice.rig01"), "case-sensitive");
        assert!(m("*.s19-?", "bob.s19-7"));
        assert!(!m("*.s19-?", "bob.s19-17"));
        assert!(m("a*b*c", "aXXbYYbZc"));
        assert!(!m("a*b*c", "aXXbYYbZ"));
        assert!(m("*", ""));
        assert!(m("**a**", "a"));
        assert!(m("??", "éa"), "? is one character, not one byte");
        assert!(!m("?", ""));
        assert!(m("alice.rig01", "alice.rig01"));
        assert!(!m("alice.rig01", "alice.rig011"));
        // A pathological pattern still ends quickly (single backtrack point).
        let long = "a".repeat(10_000);
        assert!(!m("*a*a*a*a*a*a*a*a*b", &long));
    }

    #[test]
    fn first_match_wins_and_the_rest_goes_to_default() {
        let map = CustomerMap::new(
            &[
                rule("alice.special", "carol"),
                rule("alice.*", "alice"),
                rule("bob*", "bob"),
            ],
            "farm",
        )
        .unwrap();
        assert_eq!(map.customer_of("alice.special").as_str(), "carol");
        assert_eq!(map.customer_of("alice.rig1").as_str(), "alice");
        assert_eq!(map.customer_of("bobby").as_str(), "bob");
        assert_eq!(map.customer_of("dave.rig1").as_str(), "farm");
        assert_eq!(map.customer_of("").as_str(), "farm");
        let names: Vec<&str> = map.customers().iter().map(|c| c.as_str()).collect();
        assert_eq!(names, ["alice", "bob", "carol", "farm"]);
    }

    #[test]
    fn work_sums_per_customer() {
        // alice: 1 + 2 (two rows of one worker) + 4 = 7; farm (default): 8; bob: none seen.
        let map =
            CustomerMap::new(&[rule("alice.*", "alice"), rule("bob.*", "bob")], "farm").unwrap();
        let w = |x: f64| Work::new(x).unwrap();
        let sums = map.sum_work([
            ("alice.a", w(1.0)),
            ("alice.a", w(2.0)),
            ("alice.b", w(4.0)),
            ("x", w(8.0)),
        ]);
        let got: Vec<(&str, f64)> = sums.iter().map(|(c, w)| (c.as_str(), w.get())).collect();
        assert_eq!(got, [("alice", 7.0), ("bob", 0.0), ("farm", 8.0)]);
    }

    #[test]
    fn bad_rules_are_named() {
        let err = CustomerMap::new(&[rule("a.*", "a"), rule("b[0-9]", "b")], "farm").unwrap_err();
        assert_eq!(
            err.to_string(),
            "customer rule 2 (pattern \"b[0-9]\"): '[' is not supported in worker patterns: use * (any characters) and ? (one character)"
        );
        let err = CustomerMap::new(&[rule("", "a")], "farm").unwrap_err();
        assert!(matches!(
            err,
            CustomerMapError::Pattern {
                rule: 1,
                source: PatternError::Empty,
                ..
            }
        ));
        let err = CustomerMap::new(&[rule("a.*", " a")], "farm").unwrap_err();
        assert!(
            matches!(err, CustomerMapError::Customer { rule: 1, .. }),
            "{err}"
        );
        assert!(matches!(
            CustomerMap::new(&[], ""),
            Err(CustomerMapError::Default(_))
        ));
    }

    #[test]
    fn hidden_rules_are_refused() {
        // Same pattern twice.
        let err = CustomerMap::new(&[rule("a.*", "a"), rule("a.*", "b")], "farm").unwrap_err();
        assert!(matches!(
            err,
            CustomerMapError::Hidden {
                rule: 2,
                earlier: 1,
                ..
            }
        ));
        // Anything after a catch-all.
        let err = CustomerMap::new(&[rule("*", "a"), rule("b.*", "b")], "farm").unwrap_err();
        assert!(matches!(
            err,
            CustomerMapError::Hidden {
                rule: 2,
                earlier: 1,
                ..
            }
        ));
        // An exact name an earlier glob already covers.
        let err = CustomerMap::new(&[rule("alice.*", "a"), rule("alice.special", "c")], "farm")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "customer rule 2 (pattern \"alice.special\") can never match: rule 1 (\"alice.*\") comes first and matches every worker it would"
        );
        // The other way round is the documented way to carve out an exception.
        assert!(
            CustomerMap::new(&[rule("alice.special", "c"), rule("alice.*", "a")], "farm").is_ok()
        );
    }

    #[test]
    fn customer_names_are_checked() {
        assert!(Customer::new("Alice & Co").is_ok());
        assert!(Customer::new("").is_err());
        assert!(Customer::new("a\tb").is_err());
        assert!(Customer::new(&"x".repeat(65)).is_err());
        assert!(serde_json::from_str::<Customer>("\" a\"").is_err());
    }

    #[test]
    fn rules_deserialize_strictly() {
        let rules: Vec<CustomerRule> =
            serde_json::from_str(r#"[{"pattern":"alice.*","customer":"alice"}]"#).unwrap();
        assert_eq!(rules, [rule("alice.*", "alice")]);
        assert!(
            serde_json::from_str::<CustomerRule>(r#"{"pattern":"a","customer":"b","x":1}"#)
                .is_err()
        );
    }
}
