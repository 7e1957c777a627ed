//! The failure budgets of a run, counted across its datacenters: failed servers against one
//! budget, unreachable ones against their own (or none).

use serde::{Deserialize, Serialize};

use super::Counts;

/// The budgets of a run, in servers (computed at launch from the spec and the run's size).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budgets {
    /// Failed servers (not unreachable) the run tolerates; one more stops it.
    pub max_failures: Option<u32>,
    /// Unreachable servers the run tolerates; `None`: they do not stop it.
    pub max_unreachable: Option<u32>,
}

/// Why a run stopped before all its jobs ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopKind {
    /// A budget was spent.
    Budget,
    /// The canary wave did not succeed.
    Canary,
    /// Someone cancelled the run.
    Cancelled,
}

impl StopKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StopKind::Budget => "budget",
            StopKind::Canary => "canary",
            StopKind::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<StopKind> {
        match s {
            "budget" => Some(StopKind::Budget),
            "canary" => Some(StopKind::Canary),
            "cancelled" => Some(StopKind::Cancelled),
            _ => None,
        }
    }
}

/// A decision to stop a run: its kind and the reason its cancelled jobs carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    pub kind: StopKind,
    pub reason: String,
}

impl Budgets {
    /// Whether the counts spend a budget, and the reason given to the jobs it cancels.
    pub fn spent(&self, c: &Counts, total: u32) -> Option<Stop> {
        if let Some(max) = self.max_failures {
            if c.failed > max {
                return Some(Stop {
                    kind: StopKind::Budget,
                    reason: format!(
                        "failure budget spent: {} of {total} failed (budget {max})",
                        c.failed
                    ),
                });
            }
        }
        if let Some(max) = self.max_unreachable {
            if c.unreachable > max {
                return Some(Stop {
                    kind: StopKind::Budget,
                    reason: format!(
                        "unreachable budget spent: {} of {total} unreachable (budget {max})",
                        c.unreachable
                    ),
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(failed: u32, unreachable: u32) -> Counts {
        Counts {
            failed,
            unreachable,
            ..Counts::default()
        }
    }

    #[test]
    fn the_budget_is_spent_by_one_more_than_it_allows() {
        let b = Budgets {
            max_failures: Some(4),
            max_unreachable: None,
        };
        assert_eq!(b.spent(&counts(4, 50), 300), None);
        let stop = b.spent(&counts(5, 0), 300).unwrap();
        assert_eq!(stop.kind, StopKind::Budget);
        assert_eq!(
            stop.reason,
            "failure budget spent: 5 of 300 failed (budget 4)"
        );
    }

    #[test]
    fn unreachable_servers_count_against_their_own_budget() {
        let b = Budgets {
            max_failures: Some(0),
            max_unreachable: Some(2),
        };
        assert_eq!(b.spent(&counts(0, 2), 30), None);
        assert_eq!(
            b.spent(&counts(0, 3), 30).unwrap().reason,
            "unreachable budget spent: 3 of 30 unreachable (budget 2)"
        );
        assert!(Budgets::default().spent(&counts(30, 30), 30).is_none());
    }

    #[test]
    fn stop_kinds_round_trip() {
        for k in [StopKind::Budget, StopKind::Canary, StopKind::Cancelled] {
            assert_eq!(StopKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(StopKind::parse("x"), None);
    }
}
