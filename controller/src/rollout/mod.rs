//! Rollouts, without a database: how a run's servers split into waves (a canary, then
//! batches), the failure budgets' arithmetic, a run's status from its jobs' counts, and what
//! the scheduler does next for a run. The scheduler and the lifecycle are thin shells over it.

mod amount;
mod budget;
mod progress;
mod waves;

pub use amount::{Amount, AmountError};
pub use budget::{Budgets, Stop, StopKind};
pub use progress::{aggregate, held_reason, next, queued_reason, Counts, RunState, Step};
pub use waves::{plan_waves, Canary, Spec, SpecError};
