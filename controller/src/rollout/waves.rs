//! A rollout's spec and its waves: a canary (N servers, or every server of one datacenter),
//! then batches of the rest (a number or a share, per datacenter or overall).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Amount, Budgets};

/// The first wave of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Canary {
    /// The first N servers.
    Count(u32),
    /// Every server of this datacenter (its routing label's value).
    Datacenter(String),
}

/// A launch's rollout, as checked and stored with its run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    pub canary: Option<Canary>,
    pub batch: Option<Amount>,
    /// Whether a batch takes its number from each datacenter (else from the whole run).
    #[serde(default)]
    pub batch_per_datacenter: bool,
    /// Whether each wave after the first waits for an operator's approval.
    #[serde(default)]
    pub pause: bool,
    pub max_failures: Option<Amount>,
    pub max_unreachable: Option<Amount>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("canary: no server of the launch is in datacenter {0:?}")]
    NoSuchDatacenter(String),
    #[error("canary: a canary of 0 servers is no canary; leave it out")]
    EmptyCanary,
    #[error("pause: there is no wave to pause before; give a canary or a batch")]
    NothingToPause,
}

impl Spec {
    /// Whether the spec asks for anything beyond running every job at once.
    pub fn is_plain(&self) -> bool {
        *self == Spec::default()
    }

    /// The budgets for a run of `total` servers.
    pub fn budgets(&self, total: u32) -> Budgets {
        Budgets {
            max_failures: self.max_failures.map(|a| a.budget_of(total)),
            max_unreachable: self.max_unreachable.map(|a| a.budget_of(total)),
        }
    }
}

/// The wave of each server (by position in `datacenters`, which gives each server's
/// datacenter, `None` for a server without one) and how many waves there are. Wave 0 is the
/// canary when there is one; servers keep their order within a wave.
pub fn plan_waves(datacenters: &[Option<&str>], spec: &Spec) -> Result<(Vec<u32>, u32), SpecError> {
    let n = datacenters.len();
    let mut wave: Vec<Option<u32>> = vec![None; n];
    let mut next = 0u32;
    match &spec.canary {
        None => {}
        Some(Canary::Count(0)) => return Err(SpecError::EmptyCanary),
        Some(Canary::Count(c)) => {
            for w in wave.iter_mut().take(*c as usize) {
                *w = Some(0);
            }
            next = 1;
        }
        Some(Canary::Datacenter(dc)) => {
            let mut any = false;
            for (i, d) in datacenters.iter().enumerate() {
                if *d == Some(dc.as_str()) {
                    wave[i] = Some(0);
                    any = true;
                }
            }
            if !any {
                return Err(SpecError::NoSuchDatacenter(dc.clone()));
            }
            next = 1;
        }
    }
    let rest: Vec<usize> = (0..n).filter(|i| wave[*i].is_none()).collect();
    match spec.batch {
        None => {
            for i in &rest {
                wave[*i] = Some(next);
            }
            if !rest.is_empty() {
                next += 1;
            }
        }
        Some(batch) if spec.batch_per_datacenter => {
            // Each datacenter's servers in batches of its own size; batch k of every
            // datacenter runs in the same wave.
            let mut by_dc: BTreeMap<Option<&str>, Vec<usize>> = BTreeMap::new();
            for i in &rest {
                by_dc.entry(datacenters[*i]).or_default().push(*i);
            }
            let mut deepest = 0;
            for (dc, members) in &by_dc {
                let all = datacenters.iter().filter(|d| *d == dc).count() as u32;
                let size = batch.batch_of(all) as usize;
                for (k, chunk) in members.chunks(size).enumerate() {
                    for i in chunk {
                        wave[*i] = Some(next + k as u32);
                    }
                    deepest = deepest.max(k as u32 + 1);
                }
            }
            next += deepest;
        }
        Some(batch) => {
            let size = batch.batch_of(n as u32) as usize;
            for chunk in rest.chunks(size) {
                for i in chunk {
                    wave[*i] = Some(next);
                }
                next += 1;
            }
        }
    }
    if spec.pause && next < 2 {
        return Err(SpecError::NothingToPause);
    }
    Ok((
        wave.into_iter().map(|w| w.unwrap_or(0)).collect(),
        next.max(1),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet() -> Vec<Option<&'static str>> {
        let mut v = Vec::new();
        for dc in ["a", "b", "c"] {
            for _ in 0..10 {
                v.push(Some(dc));
            }
        }
        v
    }

    #[test]
    fn no_rollout_is_one_wave() {
        let (w, n) = plan_waves(&fleet(), &Spec::default()).unwrap();
        assert_eq!(n, 1);
        assert!(w.iter().all(|w| *w == 0));
    }

    #[test]
    fn a_canary_then_overall_batches() {
        let spec = Spec {
            canary: Some(Canary::Count(1)),
            batch: Some(Amount::Percent(50)),
            ..Spec::default()
        };
        let (w, n) = plan_waves(&fleet(), &spec).unwrap();
        // 1 canary, then batches of 15 from the 29 others.
        assert_eq!(n, 3);
        assert_eq!(w[0], 0);
        assert_eq!(w.iter().filter(|x| **x == 1).count(), 15);
        assert_eq!(w.iter().filter(|x| **x == 2).count(), 14);
    }

    #[test]
    fn a_datacenter_canary_then_batches_per_datacenter() {
        let spec = Spec {
            canary: Some(Canary::Datacenter("b".into())),
            batch: Some(Amount::Count(4)),
            batch_per_datacenter: true,
            ..Spec::default()
        };
        let fleet = fleet();
        let (w, n) = plan_waves(&fleet, &spec).unwrap();
        assert_eq!(n, 4);
        for (i, dc) in fleet.iter().enumerate() {
            if *dc == Some("b") {
                assert_eq!(w[i], 0);
            }
        }
        // a and c: 4 + 4 + 2 each, in waves 1, 2, 3.
        assert_eq!(w.iter().filter(|x| **x == 1).count(), 8);
        assert_eq!(w.iter().filter(|x| **x == 3).count(), 4);
    }

    #[test]
    fn refuses_what_cannot_be_planned() {
        let bad_dc = Spec {
            canary: Some(Canary::Datacenter("z".into())),
            ..Spec::default()
        };
        assert_eq!(
            plan_waves(&fleet(), &bad_dc),
            Err(SpecError::NoSuchDatacenter("z".into()))
        );
        let pause_alone = Spec {
            pause: true,
            ..Spec::default()
        };
        assert_eq!(
            plan_waves(&fleet(), &pause_alone),
            Err(SpecError::NothingToPause)
        );
        let empty = Spec {
            canary: Some(Canary::Count(0)),
            ..Spec::default()
        };
        assert_eq!(plan_waves(&fleet(), &empty), Err(SpecError::EmptyCanary));
    }

    #[test]
    fn budgets_follow_the_run_size() {
        let spec = Spec {
            max_failures: Some(Amount::Percent(10)),
            max_unreachable: Some(Amount::Count(2)),
            ..Spec::default()
        };
        let b = spec.budgets(30);
        assert_eq!((b.max_failures, b.max_unreachable), (Some(3), Some(2)));
    }
}
