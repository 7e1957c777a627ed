//! Rollouts in the dispatch round: each round first moves the rollouts on (a wave released
//! once the ones before it are over, a run stopped after a canary that did not succeed, a
//! wave marked as waiting for approval), as [`crate::rollout::next`] decides. Jobs of waves
//! not released are not in the queue at all (see [`Store::unassigned_jobs`]); their pending
//! reason says what they wait for.

use crate::lifecycle::Lifecycle;
use crate::rollout::{held_reason, next, Step};
use crate::store::audit::Actor;
use crate::store::Store;

/// Moves every rolling run on by one step where it can; says whether a wave was released or
/// a run stopped (the queue changed).
pub(super) async fn advance(store: &Store, lifecycle: &Lifecycle) -> crate::store::Result<bool> {
    let mut moved = false;
    for run in store.rolling_runs().await? {
        let state = run.state();
        let per_wave = store.run_wave_counts(run.id, state.waves).await?;
        let step = next(&state, &per_wave);
        match &step {
            Step::Release { wave } => {
                if store
                    .release_wave(run.id, state.current_wave, *wave)
                    .await?
                {
                    tracing::info!(run = %run.run_id, wave = wave + 1, "wave released");
                    moved = true;
                }
            }
            Step::AwaitApproval { wave } => {
                if let Some(reason) = held_reason(&state, &step, *wave) {
                    store.set_wave_reason(run.id, *wave, &reason).await?;
                }
            }
            Step::Stop(stop) => {
                if lifecycle
                    .stop_run(run.id, stop, false, &Actor::system())
                    .await?
                {
                    tracing::warn!(run = %run.run_id, reason = %stop.reason, "run stopped");
                    moved = true;
                }
            }
            Step::Nothing | Step::Wait => {}
        }
    }
    Ok(moved)
}
