//! A number of servers, as a count ("10") or a share of some total ("10%").

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A count of servers, or a percentage of a total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Amount {
    Count(u32),
    Percent(u8),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is neither a number of servers (\"10\") nor a percentage (\"10%\", 0–100)")]
pub struct AmountError(pub String);

impl FromStr for Amount {
    type Err = AmountError;
    fn from_str(s: &str) -> Result<Amount, AmountError> {
        let t = s.trim();
        let bad = || AmountError(crate::text::fit_chars(s, 40).into_owned());
        if let Some(p) = t.strip_suffix('%') {
            let n: u8 = p.trim().parse().map_err(|_| bad())?;
            if n > 100 {
                return Err(bad());
            }
            Ok(Amount::Percent(n))
        } else {
            Ok(Amount::Count(t.parse().map_err(|_| bad())?))
        }
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Amount::Count(n) => write!(f, "{n}"),
            Amount::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Amount {
    /// As a budget of `total` servers: a percentage rounds down (2% of 30 is 0: the first
    /// failure spends it), as ansible's `max_fail_percentage` does.
    pub fn budget_of(self, total: u32) -> u32 {
        match self {
            Amount::Count(n) => n,
            Amount::Percent(p) => (u64::from(total) * u64::from(p) / 100) as u32,
        }
    }

    /// As a batch of `total` servers: a percentage rounds up and a batch holds at least one
    /// server, so that every rollout ends.
    pub fn batch_of(self, total: u32) -> u32 {
        let n = match self {
            Amount::Count(n) => n,
            Amount::Percent(p) => (u64::from(total) * u64::from(p)).div_ceil(100) as u32,
        };
        n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_counts_and_percentages() {
        assert_eq!("10".parse::<Amount>().unwrap(), Amount::Count(10));
        assert_eq!(" 10% ".parse::<Amount>().unwrap(), Amount::Percent(10));
        assert!("101%".parse::<Amount>().is_err());
        assert!("-1".parse::<Amount>().is_err());
        assert!("ten".parse::<Amount>().is_err());
        assert!("".parse::<Amount>().is_err());
        assert_eq!(Amount::Percent(10).to_string(), "10%");
    }

    #[test]
    fn budgets_round_down_and_batches_round_up() {
        assert_eq!(Amount::Percent(2).budget_of(300), 6);
        assert_eq!(Amount::Percent(2).budget_of(30), 0);
        assert_eq!(Amount::Count(3).budget_of(30), 3);
        assert_eq!(Amount::Percent(10).batch_of(25), 3);
        assert_eq!(Amount::Percent(1).batch_of(5), 1);
        assert_eq!(Amount::Count(0).batch_of(5), 1);
    }
}
