//! The domain's records, enums and id newtypes, shared by the store, the API and the scheduler.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A JSON object, as the seed's `tags`, `variables`, `extra_vars` and `host_vars` hold.
pub type JsonObject = serde_json::Map<String, serde_json::Value>;

pub use outpost_api::enums::{
    CredentialKind, JobStatus, ProjectKind, Role, RunStatus, SyncState, TaskStatus, TicketPriority,
    TicketStatus, UnknownVariant,
};

/// Declares an integer primary-key newtype.
macro_rules! id_type {
    ($($(#[$meta:meta])* $name:ident($inner:ty);)+) => {$(
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type)]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    )+};
}

id_type! {
    UserId(i32);
    ServerId(i32);
    PlaybookId(i32);
    /// The job's row id (`jobs.id`); the public handle is its uuid (`jobs.job_id`).
    JobId(i32);
    TicketId(i32);
    AgentId(i32);
    AuditId(i64);
    ProjectId(i32);
    /// A revision's row (`project_revisions.id`); the public handle is its digest.
    RevisionId(i32);
    CredentialId(i32);
    /// A job template's row (`job_templates.id`).
    TemplateId(i32);
    /// A notification channel (`notification_channels.id`).
    ChannelId(i32);
    /// A notification routing rule.
    RuleId(i32);
    /// A run's row (`runs.id`); the public handle is its uuid (`runs.run_id`).
    RunId(i32);
}

/// Declares a uuid handle newtype, stored as the seed's 36-character text and decoded once,
/// by sqlx, so that no caller parses it from a string again.
macro_rules! uuid_type {
    ($($(#[$meta:meta])* $name:ident;)+) => {$(
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub uuid::Uuid);

        impl $name {
            pub fn new_v4() -> $name {
                $name(uuid::Uuid::new_v4())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<$name, uuid::Error> {
                uuid::Uuid::parse_str(s).map($name)
            }
        }

        impl<DB: sqlx::Database> sqlx::Type<DB> for $name
        where
            String: sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <String as sqlx::Type<DB>>::type_info()
            }
            fn compatible(ty: &DB::TypeInfo) -> bool {
                <String as sqlx::Type<DB>>::compatible(ty)
            }
        }

        impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for $name
        where
            String: sqlx::Decode<'r, DB>,
        {
            fn decode(
                value: <DB as sqlx::Database>::ValueRef<'r>,
            ) -> Result<$name, sqlx::error::BoxDynError> {
                let text = <String as sqlx::Decode<'r, DB>>::decode(value)?;
                Ok($name(uuid::Uuid::parse_str(&text)?))
            }
        }

        impl<'q, DB: sqlx::Database> sqlx::Encode<'q, DB> for $name
        where
            String: sqlx::Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as sqlx::Database>::ArgumentBuffer<'q>,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <String as sqlx::Encode<'q, DB>>::encode(self.to_string(), buf)
            }
        }
    )+};
}

mod cursor;
pub use cursor::{BadCursor, Cursor};
mod named;
pub use named::Named;
mod schedules;
pub use schedules::{
    Blackout, BlackoutId, OverlapRule, Schedule, ScheduleId, ScheduleRun, ScheduleRunId,
    ScheduleRunStatus,
};

uuid_type! {
    /// A job's public handle (`jobs.job_id`), the id agents and API callers know it by.
    JobUuid;
    /// The uuid an agent's certificate names (`agents.uuid`).
    AgentUuid;
    /// A run's public handle (`runs.run_id`).
    RunUuid;
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct User {
    pub id: UserId,
    pub username: String,
    pub email: String,
    #[serde(skip)]
    pub password_hash: String,
    #[sqlx(try_from = "crate::model::Named<Role>")]
    pub role: Role,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_login: Option<DateTime<Utc>>,
    /// When the password was last set (for the maximum password age).
    pub password_changed_at: Option<DateTime<Utc>>,
    /// The password was set by an admin: it must be changed before anything else.
    pub must_change_password: bool,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Server {
    pub id: ServerId,
    pub hostname: String,
    pub ip_address: String,
    pub os_type: String,
    pub os_version: Option<String>,
    pub ssh_port: i32,
    pub ssh_user: String,
    pub ssh_key_path: Option<String>,
    pub tags: Option<sqlx::types::Json<JsonObject>>,
    pub environment: Option<String>,
    pub description: Option<String>,
    pub is_active: bool,
    pub host_vars: Option<sqlx::types::Json<JsonObject>>,
    /// Chains of group names, top group first (migration 0014); NULL = no groups.
    pub inventory_groups: Option<sqlx::types::Json<Vec<Vec<String>>>>,
    /// The SSH key credential jobs reach it with (migration 0015).
    pub ssh_credential_id: Option<CredentialId>,
    /// The become password credential.
    pub become_credential_id: Option<CredentialId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A stored credential: its secret sealed under a keyring key (see [`crate::keyring`]).
#[derive(Clone, sqlx::FromRow)]
pub struct Credential {
    pub id: CredentialId,
    /// Binds the sealed secret to this row.
    pub uuid: String,
    pub name: String,
    #[sqlx(try_from = "crate::model::Named<CredentialKind>")]
    pub kind: CredentialKind,
    pub description: Option<String>,
    pub vault_id: Option<String>,
    pub public_info: Option<String>,
    /// The keyring key that sealed `secret`.
    pub key_id: String,
    /// Sealed: never the secret itself.
    pub secret: Vec<u8>,
    pub created_by: Option<UserId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Playbook {
    pub id: PlaybookId,
    pub name: String,
    pub description: Option<String>,
    pub file_path: String,
    pub file_hash: String,
    pub tags: Option<sqlx::types::Json<JsonObject>>,
    pub variables: Option<sqlx::types::Json<JsonObject>>,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The project whose file this is (`file_path` relative to its root); `None` only for a
    /// row made before projects, until start-up adopts it.
    pub project_id: Option<ProjectId>,
}

/// A tree of files a playbook runs in: a git repository, an uploaded archive, or one file.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Project {
    pub id: ProjectId,
    pub name: String,
    pub description: Option<String>,
    #[sqlx(try_from = "crate::model::Named<ProjectKind>")]
    pub kind: ProjectKind,
    pub git_url: Option<String>,
    pub git_ref: Option<String>,
    /// A deploy key file on the controller.
    pub git_key_path: Option<String>,
    /// The SSH key credential git fetches with (wins over `git_key_path`).
    pub git_credential_id: Option<CredentialId>,
    /// A project inventory file, relative to the tree's root.
    pub inventory_path: Option<String>,
    #[sqlx(try_from = "crate::model::Named<SyncState>")]
    pub sync_state: SyncState,
    pub sync_error: Option<String>,
    pub sync_started_at: Option<DateTime<Utc>>,
    pub synced_at: Option<DateTime<Utc>>,
    pub current_revision_id: Option<RevisionId>,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One sync's tree: a canonical tar under `<data_dir>/revisions/<digest>.tar`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Revision {
    pub id: RevisionId,
    pub project_id: ProjectId,
    /// Lower-case hex SHA-256 of the tar.
    pub digest: String,
    pub git_commit: Option<String>,
    pub size_bytes: i64,
    pub entries: i32,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Job {
    pub id: JobId,
    /// The external uuid.
    pub job_id: JobUuid,
    pub playbook_id: PlaybookId,
    pub server_id: ServerId,
    pub user_id: UserId,
    #[sqlx(try_from = "crate::model::Named<JobStatus>")]
    pub status: JobStatus,
    /// The dispatch id of the current attempt, which names it in every move an agent's session
    /// makes. The seed's column for it is `celery_task_id`, kept as the schema's contract.
    #[sqlx(rename = "celery_task_id")]
    pub dispatch_id: Option<String>,
    pub extra_vars: Option<sqlx::types::Json<JsonObject>>,
    pub error_message: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub agent_id: Option<AgentId>,
    pub assigned_at: Option<DateTime<Utc>>,
    pub cancel_requested_at: Option<DateTime<Utc>>,
    pub exit_code: Option<i32>,
    pub pending_reason: Option<String>,
    /// ansible-playbook's run options chosen at launch.
    pub run_options: Option<sqlx::types::Json<JsonObject>>,
    /// Whether ansible may evaluate templates in `extra_vars` (see [`crate::store::jobs::NewJob`]).
    pub extra_vars_templated: bool,
    /// The project revision the job runs (the project's current one at launch).
    pub revision_id: Option<RevisionId>,
    /// The template it was launched from (migration 0016).
    pub template_id: Option<TemplateId>,
    /// Seconds it may run; the controller's default when `None`.
    pub time_limit_secs: Option<i32>,
    /// The run grouping its launch (migration 0019; none for older jobs).
    pub run_id: Option<RunId>,
    /// Its wave in the run's rollout (0 first).
    pub wave: i32,
    /// Whether it failed because its server could not be reached (as its agent reported).
    pub unreachable: bool,
}

/// A run: one launch's jobs as a whole (see [`crate::rollout`]).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Run {
    pub id: RunId,
    pub run_id: RunUuid,
    pub user_id: UserId,
    pub playbook_id: PlaybookId,
    pub template_id: Option<TemplateId>,
    pub schedule_id: Option<ScheduleId>,
    #[sqlx(try_from = "crate::model::Named<RunStatus>")]
    pub status: RunStatus,
    /// The rollout as launched (a [`crate::rollout::Spec`]).
    pub rollout: Option<sqlx::types::Json<crate::rollout::Spec>>,
    pub total: i32,
    pub waves: i32,
    pub max_failures: Option<i32>,
    pub max_unreachable: Option<i32>,
    pub current_wave: i32,
    pub pause_between_waves: bool,
    pub approved_wave: i32,
    /// Why it stopped early ([`crate::rollout::StopKind`]'s text).
    pub stop: Option<String>,
    pub stop_reason: Option<String>,
    pub relaunch_of: Option<RunId>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

impl Run {
    pub fn stop_kind(&self) -> Option<crate::rollout::StopKind> {
        self.stop
            .as_deref()
            .and_then(crate::rollout::StopKind::parse)
    }

    pub fn budgets(&self) -> crate::rollout::Budgets {
        crate::rollout::Budgets {
            max_failures: self.max_failures.and_then(|n| u32::try_from(n).ok()),
            max_unreachable: self.max_unreachable.and_then(|n| u32::try_from(n).ok()),
        }
    }

    /// The rollout state the scheduler decides on.
    pub fn state(&self) -> crate::rollout::RunState {
        let u = |n: i32| u32::try_from(n).unwrap_or(0);
        crate::rollout::RunState {
            waves: u(self.waves).max(1),
            current_wave: u(self.current_wave),
            approved_wave: u(self.approved_wave),
            pause: self.pause_between_waves,
            has_canary: self.rollout.as_ref().is_some_and(|r| r.0.canary.is_some()),
            stopped: self.stop.is_some(),
        }
    }
}

/// A job template: a saved launch with a survey (see [`crate::survey`]).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Template {
    pub id: TemplateId,
    pub uuid: String,
    pub name: String,
    pub description: Option<String>,
    pub playbook_id: Option<PlaybookId>,
    pub project_id: Option<ProjectId>,
    pub playbook_path: Option<String>,
    /// Hostnames, when the target is named.
    pub servers: Option<sqlx::types::Json<Vec<String>>>,
    /// An `outpost_api::ServerSelector`, when the target is selected.
    pub server_filter: Option<sqlx::types::Json<outpost_api::ServerSelector>>,
    pub extra_vars: Option<sqlx::types::Json<JsonObject>>,
    pub run_options: Option<sqlx::types::Json<outpost_api::RunOptions>>,
    pub time_limit_secs: Option<i32>,
    pub survey: sqlx::types::Json<Vec<outpost_api::Question>>,
    /// How its launches roll out, unless a launch gives its own (migration 0019).
    pub rollout: Option<sqlx::types::Json<outpost_api::Rollout>>,
    pub created_by: Option<UserId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One line of a job's output to store.
#[derive(Debug, Clone)]
pub struct NewLogLine {
    pub job: JobId,
    pub line_number: i32,
    pub content: String,
    pub level: Option<String>,
    pub timestamp: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct LogLine {
    pub line_number: i32,
    pub content: String,
    pub log_level: Option<String>,
    pub timestamp: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Ticket {
    pub id: TicketId,
    pub ticket_id: String,
    pub job_id: JobId,
    pub created_by: UserId,
    pub title: String,
    pub description: Option<String>,
    #[sqlx(try_from = "crate::model::Named<TicketStatus>")]
    pub status: TicketStatus,
    #[sqlx(try_from = "crate::model::Named<TicketPriority>")]
    pub priority: TicketPriority,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
}

/// An agent on a bastion host, known by the uuid its certificate names.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Agent {
    pub id: AgentId,
    pub uuid: AgentUuid,
    pub name: String,
    pub labels: Option<sqlx::types::Json<JsonObject>>,
    pub cert_fingerprint: Option<String>,
    pub cert_expires_at: Option<DateTime<Utc>>,
    pub revoked: bool,
    pub capacity: i32,
    pub version: Option<String>,
    pub hostname: Option<String>,
    pub ansible_version: Option<String>,
    pub last_seen: Option<DateTime<Utc>>,
    pub connected_controller: Option<String>,
    /// When the agent's last session ended, while it has not come back (its grace period).
    pub lost_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Agent {
    /// The agent's labels as strings (non-string JSON values are rendered as JSON).
    pub fn label_pairs(&self) -> Vec<(String, String)> {
        self.labels
            .as_ref()
            .map(|l| {
                l.0.iter()
                    .map(|(k, v)| (k.clone(), label_text(v)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A label or tag value as text: strings as they are, anything else as JSON.
pub fn label_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct EnrollmentToken {
    pub id: i32,
    pub name: String,
    pub labels: Option<sqlx::types::Json<JsonObject>>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub agent_id: Option<AgentId>,
    pub created_by: Option<UserId>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: AuditId,
    pub user_id: Option<UserId>,
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<i32>,
    pub details: Option<sqlx::types::Json<serde_json::Value>>,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    pub timestamp: DateTime<Utc>,
}

/// One page of a listing, with the total the filter matches.
#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The count when `total_exact`, else a lower bound (see [`crate::store::listing`]).
    pub total: i64,
    pub total_exact: bool,
    pub limit: i64,
    pub offset: i64,
    /// Where the next page starts, for lists paged by key; `None` on the last page.
    #[serde(skip)]
    pub next: Option<Cursor>,
}

/// Limit and offset of a listing; the limit is clamped to 1..=1000. Lists paged by key
/// (jobs, audit) also take `after`, which starts the page past a cursor instead.
#[derive(Debug, Clone, Copy)]
pub struct Paging {
    pub limit: i64,
    pub offset: i64,
    pub after: Option<Cursor>,
}

impl Default for Paging {
    fn default() -> Self {
        Paging {
            limit: 50,
            offset: 0,
            after: None,
        }
    }
}

impl Paging {
    pub fn new(limit: i64, offset: i64) -> Paging {
        Paging {
            limit: limit.clamp(1, 1000),
            offset: offset.max(0),
            after: None,
        }
    }

    /// The same page size, starting past `cursor`.
    pub fn after(self, cursor: Option<Cursor>) -> Paging {
        Paging {
            after: cursor,
            ..self
        }
    }
}

/// Records for unit tests elsewhere in the crate.
#[cfg(test)]
pub(crate) mod samples {
    use super::*;

    pub fn server(tags: serde_json::Value) -> Server {
        Server {
            id: ServerId(1),
            hostname: "web1".into(),
            ip_address: "10.0.0.1".into(),
            os_type: "debian".into(),
            os_version: None,
            ssh_port: 2222,
            ssh_user: "deploy".into(),
            ssh_key_path: Some("/home/deploy/.ssh/id".into()),
            tags: tags.as_object().map(|o| sqlx::types::Json(o.clone())),
            environment: None,
            description: None,
            is_active: true,
            host_vars: None,
            inventory_groups: None,
            ssh_credential_id: None,
            become_credential_id: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    pub fn playbook(variables: serde_json::Value) -> Playbook {
        Playbook {
            id: PlaybookId(1),
            name: "site".into(),
            description: None,
            file_path: "/srv/site.yml".into(),
            file_hash: "a".repeat(64),
            tags: None,
            variables: variables.as_object().map(|o| sqlx::types::Json(o.clone())),
            is_active: true,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            project_id: None,
        }
    }

    pub fn project() -> Project {
        Project {
            id: ProjectId(1),
            name: "ops".into(),
            description: None,
            kind: ProjectKind::Git,
            git_url: Some("https://git.example.com/ops.git".into()),
            git_ref: None,
            git_key_path: None,
            git_credential_id: None,
            inventory_path: None,
            sync_state: SyncState::Ok,
            sync_error: None,
            sync_started_at: None,
            synced_at: None,
            current_revision_id: None,
            is_active: true,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    pub fn job(extra_vars: serde_json::Value) -> Job {
        Job {
            id: JobId(1),
            job_id: JobUuid(uuid::Uuid::from_u128(
                0x6f1c1d1e_0000_4000_8000_000000000001,
            )),
            playbook_id: PlaybookId(1),
            server_id: ServerId(1),
            user_id: UserId(1),
            status: JobStatus::Pending,
            dispatch_id: None,
            extra_vars: extra_vars.as_object().map(|o| sqlx::types::Json(o.clone())),
            error_message: None,
            started_at: None,
            completed_at: None,
            created_at: Utc::now(),
            agent_id: None,
            assigned_at: None,
            cancel_requested_at: None,
            exit_code: None,
            pending_reason: None,
            run_options: None,
            extra_vars_templated: false,
            revision_id: None,
            template_id: None,
            time_limit_secs: None,
            run_id: None,
            wave: 0,
            unreachable: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip_through_their_text() {
        for s in JobStatus::ALL {
            assert_eq!(s.as_str().parse::<JobStatus>().unwrap(), *s);
        }
        for s in TicketStatus::ALL {
            assert_eq!(s.as_str().parse::<TicketStatus>().unwrap(), *s);
        }
        let err = "sleeping".parse::<JobStatus>().unwrap_err().to_string();
        assert!(
            err.contains("pending running success failed cancelled"),
            "{err}"
        );
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Admin.at_least(Role::Operator));
        assert!(Role::Operator.at_least(Role::Viewer));
        assert!(!Role::Viewer.at_least(Role::Operator));
    }

    #[test]
    fn paging_is_clamped() {
        let p = Paging::new(100_000, -5);
        assert_eq!((p.limit, p.offset), (1000, 0));
    }

    #[test]
    fn priority_follows_environment() {
        assert_eq!(
            TicketPriority::for_environment(Some("Production")),
            TicketPriority::High
        );
        assert_eq!(TicketPriority::for_environment(None), TicketPriority::Low);
    }
}
