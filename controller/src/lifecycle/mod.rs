//! The job lifecycle: the one place where a job changes state. Claim, start, release, finish
//! (with its ticket, in one transaction), cancel, and settling the jobs of an agent that did
//! not come back. Every move of an agent's attempt is conditional on its dispatch id, so a
//! stale session, a late message or a second controller can never move a job it does not hold.
//!
//! [`machine`] is the state machine without a database; `claims` gives a job to an agent
//! under its server's limit; `records` holds the conditional UPDATEs that move a claimed job
//! on; both are private to this module; `ticket` writes a failed job's ticket.

mod claims;
pub mod machine;

pub use machine::Final;
pub mod outcomes;
mod records;
mod run_end;
mod ticket;

use std::time::Duration;

use chrono::Utc;
use uuid::Uuid;

use crate::metrics;
use crate::model::{Agent, AgentId, Job, JobId, JobStatus, RunId, ServerId};
use crate::store::audit::{insert_audits, Actor, NewAudit};
use crate::store::jobs::{LaunchAudit, NewJob};
use crate::store::launch::{insert_launch, Assign, Known};
use crate::store::runs::NewRun;
use crate::store::schedules::{claim_slot_in, SlotClaim, SlotClaimed};
use crate::store::{on_pool, Dialect, Result, Store, StoreError, WritePool};

/// One attempt at running a job: the dispatch id names it (stored in `celery_task_id`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attempt {
    pub job: JobId,
    pub dispatch_id: String,
}

impl Attempt {
    /// The attempt a job record currently names, if an agent holds it.
    pub fn of(job: &Job) -> Option<Attempt> {
        job.agent_id?;
        Some(Attempt {
            job: job.id,
            dispatch_id: job.dispatch_id.clone()?,
        })
    }
}

/// How a job ended, as its agent (or the controller, for a lost agent) reports it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: Final,
    pub exit_code: Option<i32>,
    pub error_message: Option<String>,
    /// ansible could not reach the server (its exit code 4, or its recap): the job fails, and
    /// `jobs.unreachable` tells it from a failed playbook (runs budget the two apart).
    pub unreachable: bool,
    /// The agent started the attempt. An agent reports Started before anything else, so every
    /// outcome from its job stream says so: one that finds its job still pending (the start's
    /// record failed, or was lost with a connection) records that start too, START entry and
    /// all. False for a failure the controller decides on a job the agent never had.
    pub started: bool,
}

impl Outcome {
    /// A failure the controller decides (no exit code).
    pub fn failed(reason: impl Into<String>) -> Outcome {
        Outcome {
            status: Final::Failed,
            exit_code: None,
            error_message: Some(reason.into()),
            unreachable: false,
            started: false,
        }
    }
}

/// An outcome ready to record ([`Lifecycle::prepare_finish`]): the attempt, how it ended, the
/// ticket it opens (a failed job not part of a larger run), the job's run and whether that run
/// has other jobs (its size is fixed at launch, so it is read once, before the transaction).
#[derive(Debug, Clone)]
pub struct Finishing {
    attempt: Attempt,
    outcome: Outcome,
    ticket: Option<crate::store::tickets::NewTicket>,
    run: Option<RunId>,
    in_larger_run: bool,
}

/// An agent's report that it started an attempt, to record: when the report came (the job's
/// `started_at`, however long the record waits for a shared commit) and the job's run, whose
/// lock a shared record takes before the job's row.
#[derive(Debug, Clone)]
pub struct Starting {
    pub attempt: Attempt,
    pub run: Option<RunId>,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// Counts and notes a recorded outcome.
fn finished(f: &Finishing, moved: bool) {
    if moved {
        metrics::global().jobs_finished.inc();
        if f.ticket.is_some() {
            tracing::info!(job = %f.attempt.job, "opened a ticket for a failed job");
        }
    }
}

/// What a claim did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    Claimed(Attempt),
    /// Another scheduler took the job, or it was cancelled meanwhile.
    Taken,
    /// The server already runs as many jobs as it may.
    ServerBusy,
}

/// One claim of a batch ([`Lifecycle::claim_all`]): the job, its server, the agent it goes to
/// and the dispatch id chosen for the attempt.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub job: JobId,
    pub server: ServerId,
    pub agent: AgentId,
    pub dispatch_id: String,
}

/// A launch's claim for its one job: the agent the scheduler set a place aside on.
#[derive(Debug, Clone, Copy)]
pub struct LaunchClaim {
    pub agent: AgentId,
    pub max_per_server: u32,
}

/// What a launch creates, as [`Lifecycle::launch`] takes it.
#[derive(Default, Clone, Copy)]
pub struct Launching<'a> {
    pub jobs: &'a [NewJob],
    /// The run grouping the jobs, when there is one.
    pub run: Option<&'a NewRun>,
    /// Rows the caller read already, not to be read again.
    pub known: Known<'a>,
    /// One more audit record (a template's launch, naming its answers once).
    pub audit: Option<&'a LaunchAudit>,
    /// The schedule's slot the launch fires, claimed in its commit: when the slot is not
    /// this launch's to fire, nothing is created.
    pub slot: Option<&'a SlotClaim>,
    /// The launch commits no earlier than this (a schedule's slot: its launch is written just
    /// ahead and committed at it); it holds its transaction for [`MOST_HELD`] at most.
    pub not_before: Option<chrono::DateTime<chrono::Utc>>,
}

/// The longest a launch holds its written transaction for its `not_before`, whatever the
/// clock does meanwhile: its rows stay locked that long.
const MOST_HELD: std::time::Duration = std::time::Duration::from_millis(50);

/// What [`Lifecycle::launch`] made.
#[derive(Debug)]
pub struct Launched {
    pub run: Option<RunId>,
    pub jobs: Vec<Job>,
    /// The launch's claim, when one was asked for.
    pub claim: Option<Claim>,
    /// What the claim of the slot found, when the launch fires one: anything but
    /// [`SlotClaimed::Ours`] created nothing.
    pub slot: Option<SlotClaimed>,
}

/// What a release did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// Back in the queue.
    Queued,
    /// A cancel was requested meanwhile: the job ended cancelled instead.
    Cancelled,
    /// The attempt no longer holds the job (finished, or already released).
    NotHeld,
}

/// What a cancel request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelResult {
    /// The job had not reached an agent: it is cancelled now.
    Cancelled,
    /// The job is with an agent: the request is recorded and delivered until the agent stops it.
    Requested,
}

/// The lifecycle's handle: cheap to clone.
#[derive(Clone, Debug)]
pub struct Lifecycle {
    store: Store,
}

impl Lifecycle {
    pub fn new(store: Store) -> Lifecycle {
        Lifecycle { store }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Hands a pending job to `agent` under a fresh dispatch id, unless its server already has
    /// `max_per_server` jobs with agents.
    pub async fn claim(
        &self,
        job: JobId,
        server: ServerId,
        agent: AgentId,
        max_per_server: u32,
    ) -> Result<Claim> {
        let wanted = Wanted {
            job,
            server,
            agent,
            dispatch_id: Uuid::new_v4().to_string(),
        };
        let claims = self.claim_all(&[wanted], max_per_server).await?;
        // One claim per wanted job; none would mean none was taken.
        Ok(claims.into_iter().next().unwrap_or(Claim::Taken))
    }

    /// Claims several jobs in one transaction and one commit, each as [`Lifecycle::claim`]
    /// would (the server's lock, its limit, counting the batch's own claims). Returns one
    /// [`Claim`] per wanted job, in order.
    pub async fn claim_all(&self, wanted: &[Wanted], max_per_server: u32) -> Result<Vec<Claim>> {
        claims::claim_all(&self.store, wanted, max_per_server).await
    }

    /// Whether each attempt is the one its job's row names now, read so that a commit still
    /// under way is waited for (what a claims' commit that reported a failure wrote).
    pub async fn attempts_written(&self, attempts: &[Attempt]) -> Result<Vec<bool>> {
        claims::attempts_written(&self.store, attempts).await
    }

    /// Creates a launch's run and jobs in one transaction and, when `claim` is given and the
    /// launch has one job, claims that job for the agent in the same commit: the launch's
    /// path to its agent then waits for one synchronous commit instead of two. The claim obeys
    /// the same rules as [`Lifecycle::claim`] (the server's lock, taken first; its limit);
    /// when it cannot be taken the job is created pending, for the scheduler's round. A
    /// schedule's slot ([`Launching::slot`]) is claimed first in the same transaction.
    pub async fn launch(
        &self,
        launching: Launching<'_>,
        actor: &Actor,
        claim: Option<LaunchClaim>,
    ) -> Result<Launched> {
        let Launching {
            jobs: new,
            run,
            known,
            audit,
            slot,
            not_before,
        } = launching;
        let mut prepared = self.store.prepare_launch(new, run, known).await?;
        // Written ahead of the moment it commits at, it is dated at that moment: a slot's rows
        // keep the slot's second.
        if let Some(at) = not_before {
            prepared.ts = prepared.ts.max(crate::store::stamp(at));
        }
        let ts = prepared.ts;
        let claim = match (claim, new) {
            (Some(c), [one]) => Some((c, one.server_id)),
            _ => None,
        };
        let dialect = self.store.dialect();
        let dispatch_id = Uuid::new_v4().to_string();
        let job_sql = format!(
            "SELECT {} FROM jobs WHERE id = ?",
            crate::store::jobs::COLUMNS
        );
        let (run_id, ids, claimed, read) = on_pool!(self.store, p => {
            let mut tx = p.begin_write().await?;
            if let Some(slot) = slot {
                match claim_slot_in!(&mut *tx, dialect, slot, ts)? {
                    SlotClaimed::Ours => {}
                    other => {
                        // Taken: the row's lock is let go at once, not when the pool gets to it.
                        match other {
                            SlotClaimed::FiredBefore => tx.commit().await?,
                            _ => tx.rollback().await?,
                        }
                        return Ok(Launched { run: None, jobs: Vec::new(), claim: None, slot: Some(other) });
                    }
                }
            }
            // On MySQL the claim is decided under the server's lock before the insert, and the
            // job is inserted claimed: one statement fewer on the way to the agent. SQLite (one
            // writer) claims after the insert, as the round does.
            let decided = match claim {
                Some((c, server)) if dialect == Dialect::Mysql => {
                    // As in the round's claim: without a count from the lock, no claim.
                    let busy = claims::lock_server!(&mut *tx, dialect, server)?;
                    let room = busy.is_some_and(|b| b < i64::from(c.max_per_server));
                    Some(room.then_some(c.agent))
                }
                _ => None,
            };
            let assign = decided.flatten().map(|agent| Assign { agent, dispatch_id: &dispatch_id });
            // Every audit record of the launch and its claim goes in one statement at the end.
            let mut audits = Vec::new();
            let (run_id, ids) = insert_launch!(&mut *tx, &prepared, actor, audit, &mut audits, assign.as_ref())?;
            let claimed = match (claim, ids.first(), decided) {
                (Some(_), Some(&job), Some(Some(agent))) => {
                    Some(claims::dispatched!(job, agent, &dispatch_id, audits))
                }
                (Some(_), Some(_), Some(None)) => Some(Claim::ServerBusy),
                // SQLite: no lock, and the claim's UPDATE checks the count itself.
                (Some((c, server)), Some(&job), None) => Some(claims::claim_locked!(
                    &mut *tx, dialect, None, job, server, c.agent, &dispatch_id, c.max_per_server, &mut audits
                )?),
                _ => None,
            };
            insert_audits!(&mut *tx, &audits, ts)?;
            // A launch written ahead reads its job back while it waits, not after its commit,
            // on the way to its agent.
            let read = match (not_before, ids.as_slice()) {
                (Some(_), [one]) => Some(sqlx::query_as::<_, Job>(&job_sql).bind(one).fetch_one(&mut *tx).await?),
                _ => None,
            };
            if let Some(left) = not_before.and_then(|t| (t - chrono::Utc::now()).to_std().ok()) {
                tokio::time::sleep(left.min(MOST_HELD)).await;
            }
            tx.commit().await?;
            (run_id, ids, claimed, read)
        });
        let jobs = match read {
            Some(job) => vec![job],
            None => self.store.jobs_by_ids(&ids).await?,
        };
        Ok(Launched {
            run: run_id,
            jobs,
            claim: claimed,
            slot: slot.map(|_| SlotClaimed::Ours),
        })
    }

    /// The agent started the attempt. Returns false when the attempt no longer holds the job.
    pub async fn start(&self, a: &Attempt) -> Result<bool> {
        records::start(&self.store, a, crate::store::now()).await
    }

    /// Records a reported start in its own transaction, as started when it was reported.
    pub async fn record_start(&self, s: &Starting) -> Result<bool> {
        records::start(&self.store, &s.attempt, crate::store::stamp(s.at)).await
    }

    /// The agent did not take the attempt: back to the queue (or cancelled, if asked meanwhile).
    pub async fn release(&self, a: &Attempt, reason: &str) -> Result<Released> {
        let run = self.store.get_job(a.job).await?.run_id;
        records::release(&self.store, a, reason, run).await
    }

    /// Ends the attempt's job; a failure opens a ticket on behalf of the user who launched the
    /// job, in the same transaction. Returns false (and changes nothing) when the attempt no
    /// longer holds the job or the job is already final.
    /// A job of a run of several servers opens no ticket of its own: its run opens one
    /// listing all its failed servers when it ends.
    pub async fn finish(&self, a: &Attempt, outcome: &Outcome) -> Result<bool> {
        match self.prepare_finish(a, outcome).await? {
            Some(f) => self.record_alone(&f).await,
            None => Ok(false),
        }
    }

    /// What [`Lifecycle::finish`] reads before its transaction: the job's run and, for a
    /// failed job that is not part of a larger run, its ticket. None: the attempt no longer
    /// holds the job, or the job is final already.
    pub async fn prepare_finish(
        &self,
        a: &Attempt,
        outcome: &Outcome,
    ) -> Result<Option<Finishing>> {
        let job = self.store.get_job(a.job).await?;
        let run = job.run_id;
        let own_ticket = match run {
            None => true,
            Some(r) => self.store.get_run(r).await?.total <= 1,
        };
        let ticket = match outcome.status {
            Final::Failed if own_ticket => {
                if job.status.is_final() || job.dispatch_id.as_deref() != Some(&a.dispatch_id) {
                    return Ok(None);
                }
                let playbook = self.store.get_playbook(job.playbook_id).await?;
                let server = self.store.get_server(job.server_id).await?;
                let errors = self.store.last_error_lines(job.id, 5).await?;
                Some(ticket::failure_ticket(
                    &job, &playbook, &server, outcome, &errors,
                ))
            }
            _ => None,
        };
        Ok(Some(Finishing {
            attempt: a.clone(),
            outcome: outcome.clone(),
            ticket,
            run,
            in_larger_run: !own_ticket,
        }))
    }

    /// Records several prepared outcomes in one transaction and one commit, as
    /// [`Lifecycle::finish`] would each; [`Lifecycle::record_all`] with no starts.
    pub async fn finish_all(&self, items: &[Finishing]) -> Vec<Result<bool>> {
        self.record_all(&[], items).await.1
    }

    /// Records the starts, then the prepared outcomes, in one transaction and one commit, as
    /// [`Lifecycle::start`] and [`Lifecycle::finish`] would each. When the shared commit meets
    /// a lock conflict or a value the database refuses, each is recorded on its own (the starts
    /// first), so that one cannot keep the others from their record; any other error (the
    /// database away) is every one's, at once, rather than waited for again one by one.
    /// Returns one result per start and one per item, in order.
    pub async fn record_all(
        &self,
        starts: &[Starting],
        items: &[Finishing],
    ) -> (Vec<Result<bool>>, Vec<Result<bool>>) {
        match (starts, items) {
            ([], [one]) => return (Vec::new(), vec![self.record_alone(one).await]),
            ([one], []) => return (vec![self.record_start(one).await], Vec::new()),
            _ => {}
        }
        match records::record_all(&self.store, starts, items).await {
            Ok((started, moved)) => {
                for (f, &m) in items.iter().zip(&moved) {
                    finished(f, m);
                }
                (
                    started.into_iter().map(Ok).collect(),
                    moved.into_iter().map(Ok).collect(),
                )
            }
            Err(e) if e.is_conflict() || e.refusal().is_some() => {
                metrics::global().outcome_batches_split.inc();
                tracing::warn!(error = %e, starts = starts.len(), outcomes = items.len(), "recording starts and outcomes together failed; recording each alone");
                let mut started = Vec::with_capacity(starts.len());
                for s in starts {
                    started.push(self.record_start(s).await);
                }
                let mut out = Vec::with_capacity(items.len());
                for f in items {
                    out.push(self.record_alone(f).await);
                }
                (started, out)
            }
            Err(e) => {
                let why = e.to_string();
                let each = || Err(StoreError::Interrupted(why.clone()));
                (
                    starts.iter().map(|_| each()).collect(),
                    items.iter().map(|_| each()).collect(),
                )
            }
        }
    }

    /// Records one prepared outcome in its own transaction.
    async fn record_alone(&self, f: &Finishing) -> Result<bool> {
        let moved = match records::record_all(&self.store, &[], std::slice::from_ref(f)).await {
            Ok((_, m)) => m.first().copied().unwrap_or(false),
            // The database refused the record itself (not a lost connection): record the
            // outcome in words that certainly fit rather than retry the same refusal forever.
            Err(e) if e.refusal().is_some() => {
                let reason =
                    crate::text::fit_chars(e.refusal().unwrap_or_default(), 500).into_owned();
                tracing::error!(job = %f.attempt.job, error = %reason, "the outcome was refused as reported; recording it shortened");
                let error_message = Some(format!(
                    "the outcome as reported could not be recorded ({reason}); the job's log has the output"
                ));
                let fallback = Finishing {
                    outcome: Outcome {
                        error_message: error_message.clone(),
                        ..f.outcome.clone()
                    },
                    ticket: f.ticket.as_ref().map(|t| crate::store::tickets::NewTicket {
                        description: error_message,
                        ..t.clone()
                    }),
                    ..f.clone()
                };
                let (_, m) =
                    records::record_all(&self.store, &[], std::slice::from_ref(&fallback)).await?;
                m.first().copied().unwrap_or(false)
            }
            Err(e) => return Err(e),
        };
        finished(f, moved);
        Ok(moved)
    }

    /// Cancels a job: at once when no agent holds it, otherwise by a request that is delivered
    /// to the agent holding it until the job ends.
    pub async fn cancel(&self, job: JobId, actor: &Actor) -> Result<CancelResult> {
        let run = self.store.get_job(job).await?.run_id;
        match records::cancel(&self.store, job, actor, run).await? {
            Some(r) => Ok(r),
            None => {
                let job = self.store.get_job(job).await?;
                Err(StoreError::WrongState {
                    job: job.job_id.to_string(),
                    status: job.status.to_string(),
                    action: "cancel it",
                })
            }
        }
    }

    /// Stops a run: its jobs no agent holds are cancelled with the stop's reason; those an
    /// agent holds but has not started are asked to stop, and so are running ones when
    /// `running_too` (a person's cancel; a spent budget lets them finish). The run ends when
    /// the last of them does. Returns whether this call stopped it (false: already stopped
    /// or over).
    pub async fn stop_run(
        &self,
        run: crate::model::RunId,
        stop: &crate::rollout::Stop,
        running_too: bool,
        actor: &Actor,
    ) -> Result<bool> {
        records::stop(&self.store, run, stop, running_too, actor).await
    }

    /// Squares the store with the jobs an agent says it holds, on every (re)connection: each
    /// job the agent holds is kept; an attempt it never started goes back to the queue; a job it
    /// ran but no longer knows fails. Returns how many jobs the agent holds.
    pub async fn reconcile(&self, agent: &Agent, held: &[(Uuid, String)]) -> Result<u32> {
        let mut in_flight = 0;
        for job in self.store.active_jobs_of_agent(agent.id).await? {
            let Some(attempt) = Attempt::of(&job) else {
                continue;
            };
            let reported = held
                .iter()
                .any(|(id, d)| *id == job.job_id.0 && *d == attempt.dispatch_id);
            if reported {
                in_flight += 1;
                continue;
            }
            self.settle(
                &job,
                &attempt,
                "the agent reconnected without it",
                &format!(
                    "agent {} reconnected without this job (its spool was lost)",
                    agent.name
                ),
            )
            .await?;
        }
        Ok(in_flight)
    }

    /// Settles the jobs of agents gone longer than `grace`, whichever controller they were on
    /// — including one that died, or this one before a restart: the deadlines are in the
    /// database. A job the agent had started fails ("agent lost", with a ticket); one it had
    /// not goes back to the queue. Returns the agents settled.
    pub async fn settle_abandoned(&self, grace: Duration) -> Result<Vec<Agent>> {
        let grace_chrono = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        let now = Utc::now();
        // A controller that died keeps its agents' rows: it stamps last_seen every 30 s while
        // alive, so rows it has not stamped for well over that are its orphans.
        let silent = now - grace_chrono - chrono::Duration::seconds(120);
        self.store.orphan_sessions_lost(silent).await?;
        let mut settled = Vec::new();
        for (agent, lost_at) in self.store.agents_lost_before(now - grace_chrono).await? {
            self.settle_all(
                &agent,
                &format!("agent {} was lost before starting it", agent.name),
                &format!(
                    "agent lost: {} did not come back within {} s",
                    agent.name,
                    grace.as_secs()
                ),
            )
            .await?;
            // Only the controller whose update clears the deadline records the loss.
            let audit = NewAudit {
                actor: &Actor::system(),
                action: "AGENT_LOST",
                resource_type: "agent",
                resource_id: Some(agent.id.0),
                details: Some(
                    serde_json::json!({"name": agent.name, "grace_secs": grace.as_secs()}),
                ),
            };
            if self.store.clear_lost(agent.id, lost_at, &audit).await? {
                tracing::warn!(agent = %agent.name, "agent lost");
                settled.push(agent);
            }
        }
        Ok(settled)
    }

    /// Settles the jobs of an agent an admin just revoked: it will never report on them, so
    /// they are not left to wait out the grace period of an agent that might come back. A job
    /// it had started fails (with a ticket); one it had not goes back to the queue.
    pub async fn settle_revoked(&self, agent: &Agent) -> Result<()> {
        self.settle_all(
            agent,
            &format!("agent {} was revoked before starting it", agent.name),
            &format!(
                "agent revoked: {} was revoked by an admin while it ran this job",
                agent.name
            ),
        )
        .await
    }

    /// Settles every job `agent` holds (see [`Lifecycle::settle`]).
    async fn settle_all(&self, agent: &Agent, release_reason: &str, failure: &str) -> Result<()> {
        for job in self.store.active_jobs_of_agent(agent.id).await? {
            if let Some(attempt) = Attempt::of(&job) {
                self.settle(&job, &attempt, release_reason, failure).await?;
            }
        }
        Ok(())
    }

    /// An attempt whose agent no longer has it: back to the queue if it never started, failed
    /// (with a ticket) if it did.
    async fn settle(
        &self,
        job: &Job,
        attempt: &Attempt,
        release_reason: &str,
        failure: &str,
    ) -> Result<()> {
        match job.status {
            JobStatus::Pending => {
                self.release(attempt, release_reason).await?;
            }
            _ => {
                self.finish(attempt, &Outcome::failed(failure)).await?;
            }
        }
        Ok(())
    }
}
