//! A run's own transitions, written in the transaction of the job change that causes them:
//! stopping it (a budget spent, a canary that did not succeed, a cancel: its pending jobs are
//! cancelled with the reason, running ones finish or are asked to stop) and ending it when its
//! last job ends (its status from [`crate::rollout::aggregate`], and one ticket listing the
//! failed servers when it ran on more than one).

/// The run's jobs counted by status (unreachable apart), read in the transaction `$exec`.
macro_rules! run_counts {
    ($exec:expr, $run:expr) => {{
        let run: $crate::model::RunId = $run;
        async {
            let rows: Vec<(String, bool, i64)> = sqlx::query_as(
                "SELECT status, unreachable, COUNT(*) FROM jobs WHERE run_id = ? GROUP BY status, unreachable")
                .bind(run).fetch_all(&mut *$exec).await?;
            Ok::<_, $crate::store::StoreError>(
                $crate::store::runs::counts_of(rows.into_iter().map(|(s, u, n)| (s, u, n, 0)), 1)
                    .pop()
                    .unwrap_or_default(),
            )
        }
        .await
    }};
}
pub(super) use run_counts;

/// Stops a running run: records the kind and reason (once), cancels its jobs no agent holds
/// with the reason, and asks agents to stop the ones they hold but have not started (all of
/// them, when `$running` is true: a person's cancel). Evaluates to whether this call stopped it.
macro_rules! stop_run {
    ($exec:expr, $run:expr, $stop:expr, $running:expr, $actor:expr) => {{
        let run: $crate::model::RunId = $run;
        let stop: &$crate::rollout::Stop = $stop;
        let ts = $crate::store::now();
        let reason = $crate::text::fit_chars(&stop.reason, $crate::text::VARCHAR_255).into_owned();
        async {
            let res = sqlx::query(
                "UPDATE runs SET stop = ?, stop_reason = ? WHERE id = ? AND stop IS NULL AND status = 'running'",
            )
            .bind(stop.kind.as_str()).bind(&reason).bind(run)
            .execute(&mut *$exec).await?;
            let stopped = res.rows_affected() == 1;
            if stopped {
                let from = $crate::lifecycle::machine::Move::CancelQueued.leaves_sql();
                let cancelled = sqlx::query(&format!(
                    "UPDATE jobs SET status = 'cancelled', cancel_requested_at = ?, completed_at = ?, error_message = ? \
                     WHERE run_id = ? AND status IN {from} AND agent_id IS NULL"))
                    .bind(ts).bind(ts).bind(&reason).bind(run)
                    .execute(&mut *$exec).await?.rows_affected();
                let held = if $running { $crate::store::jobs::ACTIVE_SQL } else { "('pending')" };
                sqlx::query(&format!(
                    "UPDATE jobs SET cancel_requested_at = COALESCE(cancel_requested_at, ?) \
                     WHERE run_id = ? AND status IN {held} AND agent_id IS NOT NULL"))
                    .bind(ts).bind(run).execute(&mut *$exec).await?;
                sqlx::query(
                    "UPDATE job_secret_vars SET sealed = ? WHERE job_id IN \
                     (SELECT id FROM jobs WHERE run_id = ? AND status = 'cancelled')")
                    .bind(Vec::<u8>::new()).bind(run).execute(&mut *$exec).await?;
                $crate::store::audit::insert_audit!(&mut *$exec, &$crate::store::audit::NewAudit {
                    actor: $actor, action: "STOP", resource_type: "run", resource_id: Some(run.0),
                    details: Some(serde_json::json!({"stop": stop.kind.as_str(), "reason": reason, "cancelled_jobs": cancelled})),
                })?;
            }
            Ok::<bool, $crate::store::StoreError>(stopped)
        }.await
    }};
}
pub(super) use stop_run;

/// Stops the run when a job's failure spends one of its budgets (after the job's own update,
/// in its transaction).
macro_rules! check_budget {
    ($exec:expr, $run:expr) => {{
        let run: $crate::model::RunId = $run;
        async {
            let row: Option<(i32, Option<i32>, Option<i32>, Option<String>)> = sqlx::query_as(
                "SELECT total, max_failures, max_unreachable, stop FROM runs WHERE id = ? AND status = 'running'")
                .bind(run).fetch_optional(&mut *$exec).await?;
            let Some((total, max_failures, max_unreachable, None)) = row else {
                return Ok::<bool, $crate::store::StoreError>(false);
            };
            let budgets = $crate::rollout::Budgets {
                max_failures: max_failures.and_then(|n| u32::try_from(n).ok()),
                max_unreachable: max_unreachable.and_then(|n| u32::try_from(n).ok()),
            };
            if budgets == $crate::rollout::Budgets::default() {
                return Ok(false);
            }
            let counts = $crate::lifecycle::run_end::run_counts!(&mut *$exec, run)?;
            match budgets.spent(&counts, u32::try_from(total).unwrap_or(0)) {
                Some(stop) => $crate::lifecycle::run_end::stop_run!(&mut *$exec, run, &stop, false, &$crate::store::audit::Actor::system()),
                None => Ok(false),
            }
        }.await
    }};
}
pub(super) use check_budget;

/// Ends the run when none of its jobs is active any more: its final status, and for a run of
/// more than one server with failures, one ticket listing the failed servers (created by the
/// user who launched it). Evaluates to whether this call ended it.
macro_rules! settle_run {
    ($exec:expr, $run:expr, $outbox_sql:expr) => {{
        let run: $crate::model::RunId = $run;
        let outbox_sql: &str = $outbox_sql;
        async {
            let active: i64 = sqlx::query_scalar(&format!(
                "SELECT COUNT(*) FROM jobs WHERE run_id = ? AND status IN {}", $crate::store::jobs::ACTIVE_SQL))
                .bind(run).fetch_one(&mut *$exec).await?;
            if active > 0 {
                return Ok::<bool, $crate::store::StoreError>(false);
            }
            let row: Option<(i32, i32, i32, Option<String>, Option<String>)> = sqlx::query_as(
                "SELECT total, user_id, playbook_id, stop, stop_reason FROM runs WHERE id = ? AND status = 'running'")
                .bind(run).fetch_optional(&mut *$exec).await?;
            let Some((total, user_id, playbook_id, stop, stop_reason)) = row else {
                return Ok(false);
            };
            let counts = $crate::lifecycle::run_end::run_counts!(&mut *$exec, run)?;
            let status = $crate::rollout::aggregate(&counts, stop.as_deref().and_then($crate::rollout::StopKind::parse));
            let ts = $crate::store::now();
            let ended = sqlx::query("UPDATE runs SET status = ?, completed_at = ? WHERE id = ? AND status = 'running'")
                .bind(status.as_str()).bind(ts).bind(run)
                .execute(&mut *$exec).await?.rows_affected() == 1;
            if !ended {
                return Ok(false);
            }
            $crate::store::audit::insert_audit!(&mut *$exec, &$crate::store::audit::NewAudit {
                actor: &$crate::store::audit::Actor::system(), action: "FINISH", resource_type: "run", resource_id: Some(run.0),
                details: Some(serde_json::json!({"status": status, "counts": counts})),
            })?;
            if total > 1 && counts.failed + counts.unreachable > 0 {
                let failed: Vec<(i32, String, Option<String>, bool, Option<String>)> = sqlx::query_as(
                    "SELECT j.id, s.hostname, s.environment, j.unreachable, j.error_message FROM jobs j \
                     JOIN servers s ON s.id = j.server_id WHERE j.run_id = ? AND j.status = 'failed' ORDER BY s.hostname")
                    .bind(run).fetch_all(&mut *$exec).await?;
                let playbook: String = sqlx::query_scalar("SELECT name FROM playbooks WHERE id = ?")
                    .bind(playbook_id).fetch_one(&mut *$exec).await?;
                let run_uuid: String = sqlx::query_scalar("SELECT run_id FROM runs WHERE id = ?")
                    .bind(run).fetch_one(&mut *$exec).await?;
                let servers: Vec<$crate::lifecycle::ticket::FailedServer> = failed.into_iter().map(|(job, hostname, environment, unreachable, error)| {
                    $crate::lifecycle::ticket::FailedServer { job: $crate::model::JobId(job), hostname, environment, unreachable, error }
                }).collect();
                let mut opened = None;
                if let Some(t) = $crate::lifecycle::ticket::run_ticket(&$crate::lifecycle::ticket::RunFailure {
                    run_uuid: &run_uuid, playbook: &playbook, user: $crate::model::UserId(user_id),
                    total: u32::try_from(total).unwrap_or(0), status, stop_reason: stop_reason.as_deref(), servers: &servers,
                }) {
                    let id = $crate::store::tickets::insert_ticket!(&mut *$exec, &t, &$crate::store::audit::Actor::system())?;
                    sqlx::query("UPDATE tickets SET run_id = ? WHERE id = ?").bind(run).bind(id).execute(&mut *$exec).await?;
                    let uuid: String = sqlx::query_scalar("SELECT ticket_id FROM tickets WHERE id = ?")
                        .bind(id).fetch_one(&mut *$exec).await?;
                    opened = Some($crate::notification::TicketRef { id: uuid, title: t.title.clone(), priority: t.priority });
                }
                // The run's one notification, committed with its end (its jobs sent none).
                let unreachable = servers.iter().filter(|s| s.unreachable).count();
                let event = $crate::notification::facts::run_event(&$crate::notification::facts::RunFacts {
                    run_uuid: &run_uuid, playbook: &playbook, total: u32::try_from(total).unwrap_or(0),
                    failed: u32::try_from(servers.len() - unreachable).unwrap_or(0),
                    unreachable: u32::try_from(unreachable).unwrap_or(0),
                    stop_reason: stop_reason.as_deref(),
                    environments: servers.iter().map(|s| s.environment.clone()).collect(),
                }, opened);
                $crate::store::outbox::enqueue_event!(&mut *$exec, &event, outbox_sql)?;
            }
            Ok(true)
        }.await
    }};
}
pub(super) use settle_run;

/// Releases a rolling run's next wave when its jobs' ends allow it ([`crate::rollout::next`]),
/// in the transaction that recorded those ends: the wave's jobs are in the queue when that
/// transaction commits, with no commit of the scheduler's between. A canary's stop and a wave
/// that waits for approval are left to the scheduler's round. Evaluates to the wave released.
macro_rules! release_next_wave {
    ($exec:expr, $run:expr) => {{
        let run: $crate::model::RunId = $run;
        async {
            let row: sqlx::Result<Option<$crate::model::Run>> = sqlx::query_as(&format!(
                "SELECT {} FROM runs WHERE id = ? AND status = 'running' AND stop IS NULL AND current_wave + 1 < waves",
                $crate::store::runs::COLUMNS))
                .bind(run).fetch_optional(&mut *$exec).await;
            let row = match row {
                Ok(row) => row,
                // A run this version cannot read (its rollout written by another version) is
                // left to the round: the outcomes are recorded all the same.
                Err(sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_)) => None,
                Err(e) => return Err(e.into()),
            };
            let Some(row) = row else {
                return Ok::<Option<u32>, $crate::store::StoreError>(None);
            };
            let state = row.state();
            let rows: Vec<(String, bool, i64, i32)> = sqlx::query_as(
                "SELECT status, unreachable, COUNT(*), wave FROM jobs WHERE run_id = ? GROUP BY status, unreachable, wave")
                .bind(run).fetch_all(&mut *$exec).await?;
            let per_wave = $crate::store::runs::counts_of(rows.into_iter(), state.waves as usize);
            match $crate::rollout::next(&state, &per_wave) {
                $crate::rollout::Step::Release { wave }
                    if $crate::store::runs::release_wave!(&mut *$exec, run, state.current_wave, wave)? =>
                {
                    Ok(Some(wave))
                }
                _ => Ok(None),
            }
        }
        .await
    }};
}
pub(super) use release_next_wave;
