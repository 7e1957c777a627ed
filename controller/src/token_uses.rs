//! When this controller last noted each API token's use, so that requests need not ask the
//! database about it (the store keeps `api_tokens.last_used` to the minute).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When this controller last noted each token's use: a token needs noting at most once a
/// minute (the store checks the minute again, for several controllers on one database).
#[derive(Debug, Default)]
pub struct TokenUses(Mutex<HashMap<i32, Instant>>);

impl TokenUses {
    const EVERY: Duration = Duration::from_secs(60);
    /// Past this many tokens, those not noted for a minute are forgotten.
    const KEPT: usize = 10_000;

    /// Whether token `id`'s use should be noted now; if so, it counts as noted.
    pub fn due(&self, id: i32) -> bool {
        self.due_at(id, Instant::now())
    }

    fn due_at(&self, id: i32, now: Instant) -> bool {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if m.get(&id)
            .is_some_and(|at| now.saturating_duration_since(*at) < Self::EVERY)
        {
            return false;
        }
        if m.len() >= Self::KEPT {
            m.retain(|_, at| now.saturating_duration_since(*at) < Self::EVERY);
        }
        m.insert(id, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_noted_once_a_minute_and_the_map_stays_bounded() {
        let uses = TokenUses::default();
        let t0 = Instant::now();
        assert!(uses.due_at(1, t0));
        assert!(!uses.due_at(1, t0 + Duration::from_secs(59)));
        assert!(uses.due_at(2, t0));
        assert!(uses.due_at(1, t0 + TokenUses::EVERY));
        for id in 0..(TokenUses::KEPT as i32 + 10) {
            uses.due_at(100 + id, t0);
        }
        let later = t0 + TokenUses::EVERY * 2;
        assert!(uses.due_at(5, later));
        assert!(uses.0.lock().unwrap().len() <= 2);
    }
}
