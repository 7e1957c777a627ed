//! Live streams (a job's log followed, the dashboard's figures): how many are open, per user
//! and in all, and when each must end because the session that opened it has.
//!
//! A stream outlives the request that authorised it, so a logout, a password change that ends
//! the other sessions, a deactivation or the token's expiry would otherwise leave it flowing.
//! One sweep, running only while streams are open, asks the database every
//! [`SWEEP`] which of their tokens are still live (one query for all of them, so it also
//! notices sessions ended through another controller) and ends the streams of the others.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::auth::Caller;
use super::error::ApiError;
use crate::model::UserId;
use crate::store::Store;

/// Open live streams of one user at most (a browser shows a few tabs; a script should not
/// hold hundreds).
pub const MAX_PER_USER: usize = 16;
/// Open live streams on this controller at most.
pub const MAX_TOTAL: usize = 1_000;
/// How often the sessions behind open streams are checked.
pub const SWEEP: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Counts {
    total: usize,
    per_user: HashMap<UserId, usize>,
    /// Per token: its open streams, and the signal that ends them.
    tokens: HashMap<i32, (usize, watch::Sender<bool>)>,
    sweeping: bool,
}

/// The registry of open streams; one per controller, shared by the API and the web UI.
pub struct LiveStreams {
    counts: Arc<Mutex<Counts>>,
    store: Store,
    stop: CancellationToken,
}

/// One open stream: counted until dropped. [`Pass::ended`] resolves when its session ends.
pub struct Pass {
    counts: Arc<Mutex<Counts>>,
    user: UserId,
    token: i32,
    ended: watch::Receiver<bool>,
}

fn lock(counts: &Mutex<Counts>) -> std::sync::MutexGuard<'_, Counts> {
    counts.lock().unwrap_or_else(|p| p.into_inner())
}

impl LiveStreams {
    pub fn new(store: Store, stop: CancellationToken) -> LiveStreams {
        LiveStreams {
            counts: Arc::default(),
            store,
            stop,
        }
    }

    /// Counts a new stream for `caller`, or refuses it with 429 when the user or the
    /// controller has as many as allowed.
    pub fn open(&self, caller: &Caller) -> Result<Pass, ApiError> {
        let mut c = lock(&self.counts);
        let mine = c.per_user.get(&caller.user.id).copied().unwrap_or(0);
        if mine >= MAX_PER_USER {
            return Err(ApiError::too_many(
                format!("{mine} live streams are open for this user already; close one (at most {MAX_PER_USER})"),
                5,
            ));
        }
        if c.total >= MAX_TOTAL {
            return Err(ApiError::too_many(
                format!(
                    "the controller serves {MAX_TOTAL} live streams already; try again shortly"
                ),
                5,
            ));
        }
        c.total += 1;
        *c.per_user.entry(caller.user.id).or_default() += 1;
        let entry = c
            .tokens
            .entry(caller.token_id)
            .or_insert_with(|| (0, watch::channel(false).0));
        entry.0 += 1;
        let ended = entry.1.subscribe();
        if !c.sweeping {
            c.sweeping = true;
            tokio::spawn(sweep(
                self.counts.clone(),
                self.store.clone(),
                self.stop.clone(),
            ));
        }
        Ok(Pass {
            counts: self.counts.clone(),
            user: caller.user.id,
            token: caller.token_id,
            ended,
        })
    }

    /// Streams open now (for tests and metrics).
    pub fn open_count(&self) -> usize {
        lock(&self.counts).total
    }
}

impl Pass {
    /// Resolves when the session behind this stream has ended.
    pub async fn ended(&mut self) {
        let _ = self.ended.wait_for(|ended| *ended).await;
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        let mut c = lock(&self.counts);
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_user.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                c.per_user.remove(&self.user);
            }
        }
        if let Some((n, _)) = c.tokens.get_mut(&self.token) {
            *n -= 1;
            if *n == 0 {
                c.tokens.remove(&self.token);
            }
        }
    }
}

/// Ends the streams whose tokens are no longer live, while any stream is open.
async fn sweep(counts: Arc<Mutex<Counts>>, store: Store, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(SWEEP) => {}
        }
        let tokens: Vec<i32> = {
            let mut c = lock(&counts);
            if c.tokens.is_empty() {
                c.sweeping = false;
                return;
            }
            c.tokens.keys().copied().collect()
        };
        // A database that does not answer ends nobody's stream: the next sweep asks again.
        let Ok(live) = store.live_tokens(&tokens).await else {
            continue;
        };
        let live: HashSet<i32> = live.into_iter().collect();
        let c = lock(&counts);
        for (token, (_, ended)) in c.tokens.iter() {
            if !live.contains(token) {
                let _ = ended.send(true);
            }
        }
    }
    lock(&counts).sweeping = false;
}

/// One rendering shared by every open stream of it (the dashboard's figures): the sender of
/// the task that renders it, while anyone watches, so that a hundred open dashboards cost one
/// task, not a hundred.
#[derive(Default)]
pub struct SharedFeed {
    tx: Mutex<Option<watch::Sender<String>>>,
}

impl SharedFeed {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<watch::Sender<String>>> {
        self.tx.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Joins the feed; if nobody watched, `start` is given the sender to run the renderer with.
    pub fn subscribe(&self, start: impl FnOnce(watch::Sender<String>)) -> watch::Receiver<String> {
        let mut slot = self.slot();
        if let Some(tx) = slot.as_ref() {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(String::new());
        *slot = Some(tx.clone());
        start(tx);
        rx
    }

    /// For the renderer, after each round: whether to stop, because the controller is
    /// `stopping` or nobody watches `tx` any more. Decided under the feed's lock, so a new
    /// watcher either joins this renderer or starts the next one; once every sender is dropped
    /// the watchers' streams end.
    pub fn release(&self, tx: &watch::Sender<String>, stopping: bool) -> bool {
        let mut slot = self.slot();
        if stopping || tx.receiver_count() == 0 {
            *slot = None;
            return true;
        }
        false
    }
}
