//! The login throttle: failed password checks counted per account, per typed name and per
//! address, in this controller's memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::model::UserId;

/// Failed password checks, per account and per address. An attempt takes a slot *before* its
/// password is checked, atomically under the map's mutex, so that however many requests race
/// for one account at most [`FREE_FAILURES`] bcrypt checks run before it is locked. After the
/// free allowance the key is locked for a time that doubles with each further failure, up to
/// [`MAX_LOCK`], with one try allowed each time the lock runs out. A success clears the
/// account; an address is only released (a success there would let someone with an account of
/// their own reset the address they spray from). Any key's failures are forgotten after
/// [`FORGET_AFTER`] without another. One controller's memory: several controllers each
/// throttle on their own.
#[derive(Default)]
pub struct Throttle {
    keys: Mutex<HashMap<String, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    /// Attempts holding a slot whose password check has not answered yet.
    in_flight: u32,
    locked_until: Option<Instant>,
    last_failure: Option<Instant>,
}

const FREE_FAILURES: u32 = 5;
const FREE_FAILURES_PER_ADDRESS: u32 = 20;
const MAX_LOCK: Duration = Duration::from_secs(15 * 60);
/// Failures of a key that is not locked are forgotten after this long without another, so the
/// typos of everyone behind one NAT do not add up for ever.
const FORGET_AFTER: Duration = Duration::from_secs(60 * 60);

/// What one attempt is counted against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleKey {
    name: String,
    free: u32,
    /// A success forgets this key's failures (accounts), or only releases its slot (addresses).
    cleared_by_success: bool,
}

impl ThrottleKey {
    /// An account that exists, by id: on MySQL/MariaDB the collation makes `ádmin`, `ADMIN `
    /// and `admin` one account, and it must have one counter however its name is typed.
    pub fn account(id: UserId) -> ThrottleKey {
        ThrottleKey {
            name: format!("user:{}", id.0),
            free: FREE_FAILURES,
            cleared_by_success: true,
        }
    }

    /// The name or email as typed, trimmed and lower-cased: an unknown name is throttled like
    /// a known one (so the throttle does not tell which exist), and a known one is counted
    /// under its spelling too. Only a hash is kept, in case a password was typed there.
    pub fn typed(login: &str) -> ThrottleKey {
        let normal = login.trim().to_lowercase();
        ThrottleKey {
            name: format!("name:{}", hex::encode(Sha256::digest(normal.as_bytes()))),
            free: FREE_FAILURES,
            cleared_by_success: true,
        }
    }

    /// The client's address: IPv4 as it is, IPv6 by its /64 (one host usually has a whole
    /// /64 to pick from), an IPv4-mapped IPv6 address as the IPv4 address it is.
    pub fn address(ip: IpAddr) -> ThrottleKey {
        let name = match ip.to_canonical() {
            IpAddr::V4(v4) => format!("ip:{v4}"),
            IpAddr::V6(v6) => {
                let s = v6.segments();
                format!("ip:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        };
        ThrottleKey {
            name,
            free: FREE_FAILURES_PER_ADDRESS,
            cleared_by_success: false,
        }
    }
}

/// A slot taken by [`Throttle::begin`]: say how the check went with [`Attempt::succeeded`] or
/// [`Attempt::failed`]. Dropped without either (the client went away while bcrypt ran), it
/// counts as a failure: the check may well have run, and nobody proved to know the password.
pub struct Attempt<'a> {
    throttle: &'a Throttle,
    keys: Vec<ThrottleKey>,
}

impl Attempt<'_> {
    /// The password was right: accounts are cleared, addresses released.
    pub fn succeeded(mut self) {
        let keys = std::mem::take(&mut self.keys);
        self.throttle.settle(&keys, true);
    }

    /// The password was wrong: every key counts a failure.
    pub fn failed(mut self) {
        let keys = std::mem::take(&mut self.keys);
        self.throttle.settle(&keys, false);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.keys.is_empty() {
            self.throttle.settle(&self.keys, false);
        }
    }
}

impl Failures {
    const NONE: Failures = Failures {
        count: 0,
        in_flight: 0,
        locked_until: None,
        last_failure: None,
    };

    /// Seconds until this key may try again, or `None` if it may try now.
    fn wait(&mut self, free: u32, now: Instant) -> Option<u64> {
        if let Some(until) = self.locked_until.filter(|u| *u > now) {
            return Some((until - now).as_secs_f64().ceil() as u64);
        }
        let stale = self
            .last_failure
            .is_none_or(|t| now.saturating_duration_since(t) > FORGET_AFTER);
        if stale && self.in_flight == 0 {
            self.count = 0;
        }
        // Below the allowance, as many checks as are left of it may run at once; past it,
        // one at a time, each time the lock runs out.
        let slots = free.saturating_sub(self.count).max(1);
        // Checks still running will decide: a bcrypt check takes well under a second.
        (self.in_flight >= slots).then_some(1)
    }
}

impl Throttle {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Failures>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Seconds to wait before an attempt on `keys` could start, if it could not now.
    #[cfg(test)]
    fn wait(&self, keys: &[ThrottleKey]) -> Option<u64> {
        let now = Instant::now();
        let mut map = self.lock();
        keys.iter()
            .filter_map(|k| map.get_mut(&k.name)?.wait(k.free, now))
            .max()
    }

    /// Takes a slot on every key at once, or none: `Err(seconds to wait)` when any key is
    /// locked or its allowance is taken by failures and checks still running. Only with a
    /// slot may a password be checked.
    pub fn begin(&self, keys: Vec<ThrottleKey>) -> Result<Attempt<'_>, u64> {
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() > 100_000 {
            // Bounded memory under a spray of names or addresses: forget keys that neither
            // are locked nor have a check running.
            map.retain(|_, f| f.in_flight > 0 || f.locked_until.is_some_and(|u| u > now));
        }
        let wait = keys
            .iter()
            .filter_map(|k| map.get_mut(&k.name)?.wait(k.free, now))
            .max();
        if let Some(wait) = wait {
            return Err(wait);
        }
        for k in &keys {
            map.entry(k.name.clone())
                .or_insert(Failures::NONE)
                .in_flight += 1;
        }
        drop(map);
        Ok(Attempt {
            throttle: self,
            keys,
        })
    }

    fn settle(&self, keys: &[ThrottleKey], success: bool) {
        let now = Instant::now();
        let mut map = self.lock();
        for k in keys {
            if success && k.cleared_by_success {
                map.remove(&k.name);
                continue;
            }
            // The entry may have been cleared meanwhile by another attempt's success; a
            // failure still counts.
            let f = map.entry(k.name.clone()).or_insert(Failures::NONE);
            f.in_flight = f.in_flight.saturating_sub(1);
            if success {
                continue;
            }
            f.count = f.count.saturating_add(1);
            f.last_failure = Some(now);
            if f.count >= k.free {
                let exp = (f.count - k.free).min(20);
                let lock = Duration::from_secs(1u64 << exp).min(MAX_LOCK);
                f.locked_until = Some(now + lock);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(n: i32) -> ThrottleKey {
        ThrottleKey::account(UserId(n))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn failures_lock_an_account_for_longer_each_time() {
        let t = Throttle::default();
        for _ in 0..FREE_FAILURES - 1 {
            t.begin(vec![account(1)]).unwrap().failed();
        }
        assert_eq!(t.wait(&[account(1)]), None, "the first failures are free");
        t.begin(vec![account(1)]).unwrap().failed();
        assert_eq!(t.wait(&[account(1)]), Some(1));
        assert_eq!(t.begin(vec![account(1)]).err(), Some(1), "locked");
        assert_eq!(t.wait(&[account(2)]), None, "another account is not");
    }

    #[test]
    fn racing_attempts_get_no_more_checks_than_the_allowance() {
        let t = Throttle::default();
        let keys = || vec![account(1), ThrottleKey::address(ip("192.0.2.1"))];
        let barrier = std::sync::Barrier::new(128);
        // 128 threads ask at once and hold what they get until all have asked, as requests
        // whose bcrypt checks are still running do.
        let granted = std::thread::scope(|s| {
            let handles: Vec<_> = (0..128)
                .map(|_| {
                    s.spawn(|| {
                        let attempt = t.begin(keys());
                        barrier.wait();
                        let got = attempt.is_ok();
                        if let Ok(a) = attempt {
                            a.failed();
                        }
                        got
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|got| *got)
                .count()
        });
        assert_eq!(granted, FREE_FAILURES as usize);
        assert_eq!(
            t.begin(keys()).err(),
            Some(1),
            "the allowance spent: locked"
        );
    }

    #[test]
    fn checks_still_running_hold_their_slots() {
        let t = Throttle::default();
        let held: Vec<_> = (0..FREE_FAILURES)
            .map(|_| t.begin(vec![account(1)]).unwrap())
            .collect();
        assert!(t.begin(vec![account(1)]).is_err(), "no slot left");
        assert!(t.wait(&[account(1)]).is_some());
        // One check turns out right: the account is cleared, the others' slots with it.
        let mut held = held.into_iter();
        held.next().unwrap().succeeded();
        assert!(t.begin(vec![account(1)]).is_ok());
        // A slot dropped without an answer (the client went away) counts as a failure.
        let t = Throttle::default();
        drop(t.begin(vec![account(1)]).unwrap());
        for _ in 0..FREE_FAILURES - 1 {
            t.begin(vec![account(1)]).unwrap().failed();
        }
        assert_eq!(t.wait(&[account(1)]), Some(1));
    }

    #[test]
    fn a_success_clears_the_account_and_not_the_address() {
        let t = Throttle::default();
        let addr = || ThrottleKey::address(ip("192.0.2.1"));
        for n in 0..FREE_FAILURES_PER_ADDRESS - FREE_FAILURES {
            // Failures on many accounts from one address.
            t.begin(vec![account(n as i32), addr()]).unwrap().failed();
        }
        for _ in 0..FREE_FAILURES - 1 {
            t.begin(vec![account(100), addr()]).unwrap().failed();
        }
        // The address has one free failure left; the right password for account 100 is
        // given (its owner, or someone spraying from an account of their own).
        t.begin(vec![account(100), addr()]).unwrap().succeeded();
        assert_eq!(t.wait(&[account(100)]), None, "the account is cleared");
        for _ in 0..FREE_FAILURES - 1 {
            t.begin(vec![account(100)]).unwrap().failed();
        }
        assert_eq!(t.wait(&[account(100)]), None, "from zero again");
        t.begin(vec![account(200), addr()]).unwrap().failed();
        assert!(
            t.begin(vec![account(201), addr()]).is_err(),
            "the address kept its failures through the success"
        );
    }

    #[test]
    fn after_a_lock_one_try_at_a_time() {
        let t = Throttle::default();
        for _ in 0..FREE_FAILURES {
            t.begin(vec![account(1)]).unwrap().failed();
        }
        std::thread::sleep(Duration::from_millis(1100));
        let probe = t.begin(vec![account(1)]).expect("the lock ran out");
        assert!(t.begin(vec![account(1)]).is_err(), "one at a time");
        probe.failed();
        assert_eq!(t.wait(&[account(1)]), Some(2), "twice as long");
    }

    #[test]
    fn old_failures_are_forgotten() {
        let now = Instant::now();
        let mut f = Failures {
            count: FREE_FAILURES - 1,
            in_flight: 0,
            locked_until: None,
            last_failure: Some(now),
        };
        assert_eq!(f.wait(FREE_FAILURES, now), None);
        f.in_flight = 1;
        assert_eq!(
            f.wait(FREE_FAILURES, now),
            Some(1),
            "the last slot is taken"
        );
        f.in_flight = 0;
        assert_eq!(
            f.wait(FREE_FAILURES, now + FORGET_AFTER + Duration::from_secs(1)),
            None
        );
        assert_eq!(f.count, 0);
    }

    #[test]
    fn addresses_are_keyed_by_host_and_ipv6_by_its_64() {
        let key = |s: &str| ThrottleKey::address(ip(s)).name;
        assert_eq!(key("192.0.2.1"), "ip:192.0.2.1");
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
        assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"), "IPv4-mapped");
        assert_eq!(
            key("2001:db8:1:2::1"),
            key("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_eq!(key("2001:db8:1:2::1"), "ip:2001:db8:1:2::/64");
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        // Spraying from every address of one /64 is one address.
        let t = Throttle::default();
        for n in 0..FREE_FAILURES_PER_ADDRESS {
            let a = ip(&format!("2001:db8:1:2::{:x}", n + 1));
            t.begin(vec![account(n as i32), ThrottleKey::address(a)])
                .unwrap()
                .failed();
        }
        let other = ThrottleKey::address(ip("2001:db8:1:2:abcd::9"));
        assert!(t.begin(vec![account(999), other]).is_err());
    }

    #[test]
    fn typed_names_are_trimmed_lowercased_and_never_kept() {
        let key = |s: &str| ThrottleKey::typed(s).name;
        assert_eq!(key(" Admin "), key("admin"));
        assert_ne!(key("admin"), key("admln"));
        assert!(!key("Hunter2-secret").to_lowercase().contains("hunter2"));
    }
}
