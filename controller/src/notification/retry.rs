//! When a failed delivery is tried again: exponential backoff from a base, capped, up to a
//! most number of attempts (then the delivery is dead and the log says why).

use std::time::Duration;

/// The retry settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
    pub max_attempts: u32,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    RetryIn(Duration),
    GiveUp,
}

impl Backoff {
    /// After the `attempts`-th failed attempt (1 = the first): wait base·2^(attempts−1), at
    /// most the cap; give up once `max_attempts` were made.
    pub fn after(&self, attempts: u32) -> After {
        if attempts >= self.max_attempts {
            return After::GiveUp;
        }
        let factor = 1u32
            .checked_shl(attempts.saturating_sub(1))
            .unwrap_or(u32::MAX);
        let wait = self
            .base
            .checked_mul(factor)
            .unwrap_or(self.cap)
            .min(self.cap);
        After::RetryIn(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_then_gives_up() {
        let b = Backoff {
            base: Duration::from_secs(5),
            cap: Duration::from_secs(60),
            max_attempts: 8,
        };
        let waits: Vec<After> = (1..=8).map(|a| b.after(a)).collect();
        let s = |n| After::RetryIn(Duration::from_secs(n));
        assert_eq!(
            waits,
            vec![
                s(5),
                s(10),
                s(20),
                s(40),
                s(60),
                s(60),
                s(60),
                After::GiveUp
            ]
        );
        // Huge attempt numbers neither overflow nor panic.
        let forever = Backoff {
            max_attempts: u32::MAX,
            ..b
        };
        assert_eq!(forever.after(200), s(60));
    }
}
