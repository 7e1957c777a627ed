//! Request and response bodies. Requests refuse unknown fields, so a misspelt option is an
//! error rather than silently ignored.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::enums::{JobStatus, ProjectKind, Role, SyncState, TicketPriority, TicketStatus};

/// A JSON object (tags, variables, labels).
pub type JsonObject = serde_json::Map<String, serde_json::Value>;

/// A request body, or a struct inside one, read only from a JSON object. serde's derived
/// structs also take an array of their fields in order (`[null, null]` for `{"role": null,
/// "email": null}`), which the OpenAPI document says is invalid and no client means; this
/// refuses it as a body of the wrong shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ObjectOnly<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visit<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
            .map(ObjectOnly)
    }
}

/// `deserialize_with` for an optional struct inside a request: an object or null.
fn optional_object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<ObjectOnly<T>>::deserialize(d)?.map(|ObjectOnly(t)| t))
}

/// Every error: a stable code for scripts and a sentence for people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// `bad_request`, `unauthorized`, `forbidden`, `not_found`, `conflict`, `payload_too_large`,
    /// `unsupported_media_type`, `unprocessable`, `too_many_requests`, `password_expired`,
    /// `unavailable`, `internal`.
    pub error: String,
    pub message: String,
    /// Each refused field with why, when the refusal is about several (a survey's answers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldError>,
}

/// One refused field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// One page of a listing.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// How many items the filter matches in all when `total_exact` is true; otherwise at least
    /// this many (the long lists — jobs, audit — count at most 10,000 rows rather than scan
    /// every match for a figure nobody pages through).
    pub total: i64,
    /// Whether `total` is the exact count (true) or a lower bound (false).
    #[serde(default = "exact")]
    pub total_exact: bool,
    pub limit: i64,
    pub offset: i64,
    /// The cursor of the next (older) page, to pass back as `after`: null on the last page and
    /// on lists that page by `offset` only. Opaque: made by the server from the last item's
    /// sort key.
    #[serde(default)]
    pub next: Option<String>,
}

fn exact() -> bool {
    true
}

/// `limit` (1–1000, default 50) and `offset` of a listing.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

/// A record named by its id or by its name (hostname, playbook name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum IdOrName {
    Id(i64),
    Name(String),
}

// ---------------------------------------------------------------- auth

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The username, or leave it out and give `email`.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LoginResponse {
    /// The bearer token: send it as `Authorization: Bearer <token>`. Shown once.
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub user: UserView,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Whoami {
    pub user: UserView,
    pub token_expires_at: DateTime<Utc>,
}

// ---------------------------------------------------------------- users

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    pub id: i32,
    pub username: String,
    pub email: String,
    pub role: Role,
    pub is_active: bool,
    /// The password must be changed before anything else is allowed.
    pub must_change_password: bool,
    pub password_changed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_login: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUserRequest {
    pub username: String,
    pub email: String,
    /// 8 to 72 bytes. The new user must change it at first login.
    pub password: String,
    #[serde(default)]
    pub role: Option<Role>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatchRequest {
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub is_active: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChangeRequest {
    /// Required when changing one's own password.
    #[serde(default)]
    pub current_password: Option<String>,
    pub new_password: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserQuery {
    pub role: Option<Role>,
    pub active: Option<bool>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

// ---------------------------------------------------------------- servers

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServerView {
    pub id: i32,
    pub hostname: String,
    pub ip_address: String,
    pub os_type: String,
    pub os_version: Option<String>,
    pub ssh_port: i32,
    pub ssh_user: String,
    pub ssh_key_path: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub tags: Option<JsonObject>,
    pub environment: Option<String>,
    pub description: Option<String>,
    pub is_active: bool,
    #[schema(value_type = Option<Object>)]
    pub host_vars: Option<JsonObject>,
    /// The server's groups as ansible reads them: chains of group names from a top group down
    /// to the group that lists the host (`all` and `ungrouped` left out), e.g.
    /// `[["prod","web"],["dc_fra1"]]`. Names match `^[A-Za-z_][A-Za-z0-9_]{0,99}$`; at most 64
    /// chains of at most 16 groups.
    #[serde(default)]
    pub inventory_groups: Vec<Vec<String>>,
    /// The SSH key credential jobs reach the server with (instead of `ssh_key_path`).
    #[serde(default)]
    pub ssh_credential: Option<NameRef>,
    /// The password credential `become` uses on the server.
    #[serde(default)]
    pub become_credential: Option<NameRef>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewServerRequest {
    pub hostname: String,
    pub ip_address: String,
    pub os_type: String,
    #[serde(default)]
    pub os_version: Option<String>,
    /// Default 22.
    #[serde(default)]
    pub ssh_port: Option<i32>,
    /// Default root.
    #[serde(default)]
    pub ssh_user: Option<String>,
    #[serde(default)]
    pub ssh_key_path: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub tags: Option<JsonObject>,
    #[serde(default)]
    pub environment: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub host_vars: Option<JsonObject>,
    /// The server's groups as ansible reads them: chains of group names from a top group down
    /// to the group that lists the host (`all` and `ungrouped` left out), e.g.
    /// `[["prod","web"],["dc_fra1"]]`. Names match `^[A-Za-z_][A-Za-z0-9_]{0,99}$`; at most 64
    /// chains of at most 16 groups.
    #[serde(default)]
    pub inventory_groups: Option<Vec<Vec<String>>>,
    /// An `ssh_key` credential, by name, that jobs reach the server with.
    #[serde(default)]
    pub ssh_credential: Option<String>,
    /// A `become_password` credential, by name.
    #[serde(default)]
    pub become_credential: Option<String>,
}

/// Fields to change; those left out stay as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerPatchRequest {
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub ip_address: Option<String>,
    #[serde(default)]
    pub os_type: Option<String>,
    #[serde(default)]
    pub os_version: Option<String>,
    #[serde(default)]
    pub ssh_port: Option<i32>,
    #[serde(default)]
    pub ssh_user: Option<String>,
    #[serde(default)]
    pub ssh_key_path: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub tags: Option<JsonObject>,
    #[serde(default)]
    pub environment: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub host_vars: Option<JsonObject>,
    /// Replaces the server's group chains (`[]` clears them); see [`ServerView::inventory_groups`].
    #[serde(default)]
    pub inventory_groups: Option<Vec<Vec<String>>>,
    /// An `ssh_key` credential by name; `""` detaches it.
    #[serde(default)]
    pub ssh_credential: Option<String>,
    /// A `become_password` credential by name; `""` detaches it.
    #[serde(default)]
    pub become_credential: Option<String>,
    #[serde(default)]
    pub is_active: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ServerQuery {
    pub environment: Option<String>,
    /// `key=value`: servers whose tags hold it.
    pub tag: Option<String>,
    pub active: Option<bool>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

/// What `DELETE` did: a server that jobs refer to is deactivated, not deleted.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeleteResult {
    /// `deleted` or `deactivated`.
    pub outcome: String,
    pub message: String,
}

// ---------------------------------------------------------------- playbooks

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlaybookView {
    pub id: i32,
    pub name: String,
    pub description: Option<String>,
    pub file_path: String,
    /// SHA-256 of the content.
    pub file_hash: String,
    #[schema(value_type = Option<Object>)]
    pub tags: Option<JsonObject>,
    #[schema(value_type = Option<Object>)]
    pub variables: Option<JsonObject>,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The YAML itself (single reads only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPlaybookRequest {
    pub name: String,
    /// The playbook's YAML: a list of plays.
    pub content: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub tags: Option<JsonObject>,
    /// Default variables (a job's extra vars override them).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub variables: Option<JsonObject>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaybookPatchRequest {
    #[serde(default)]
    pub name: Option<String>,
    /// New YAML: a new file and a new hash.
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub tags: Option<JsonObject>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub variables: Option<JsonObject>,
    #[serde(default)]
    pub is_active: Option<bool>,
}

// ---------------------------------------------------------------- projects

/// A project: a tree of files (a git repository, an uploaded archive, or one uploaded
/// playbook) that its playbooks run in.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProjectView {
    pub id: i32,
    pub name: String,
    pub description: Option<String>,
    pub kind: ProjectKind,
    pub git_url: Option<String>,
    /// Branch, tag or commit; none: the remote's default branch.
    pub git_ref: Option<String>,
    /// A deploy key file on the controller.
    pub git_key_path: Option<String>,
    /// The `ssh_key` credential git fetches with (wins over `git_key_path`).
    #[serde(default)]
    pub git_credential: Option<NameRef>,
    /// The `vault_password` credentials that open the project's vault-encrypted files.
    #[serde(default)]
    pub vault_credentials: Vec<NameRef>,
    /// The project's inventory file, relative to its root.
    pub inventory_path: Option<String>,
    pub sync_state: SyncState,
    /// Why the last sync failed (the current revision stays).
    pub sync_error: Option<String>,
    pub sync_started_at: Option<DateTime<Utc>>,
    pub synced_at: Option<DateTime<Utc>>,
    pub current_revision: Option<RevisionView>,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The project's playbooks (single reads only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playbooks: Option<Vec<ProjectPlaybookView>>,
}

/// A playbook of a project, by its path in the tree.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProjectPlaybookView {
    pub id: i32,
    pub name: String,
    pub file_path: String,
    pub file_hash: String,
    /// False when the file is gone from the current revision.
    pub is_active: bool,
}

/// One sync's tree, named by the SHA-256 of its canonical tar.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RevisionView {
    pub project: NameRef,
    pub digest: String,
    /// The git commit (git projects).
    pub commit: Option<String>,
    pub size_bytes: i64,
    pub entries: i32,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProjectRequest {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// `git` (needs `git_url`) or `archive` (its tree comes with an upload).
    pub kind: ProjectKind,
    /// `https://…`, `ssh://…`, `git://…`, `user@host:path`, `file://…` or an absolute path.
    #[serde(default)]
    pub git_url: Option<String>,
    #[serde(default)]
    pub git_ref: Option<String>,
    /// A deploy key file on the controller (absolute path).
    #[serde(default)]
    pub git_key_path: Option<String>,
    /// An `ssh_key` credential, by name, for git.
    #[serde(default)]
    pub git_credential: Option<String>,
    /// `vault_password` credentials by name, at most one per vault id.
    #[serde(default)]
    pub vault_credentials: Option<Vec<String>>,
    #[serde(default)]
    pub inventory_path: Option<String>,
    /// Start the first sync at once (git projects; default true).
    #[serde(default)]
    pub sync: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectPatchRequest {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub git_url: Option<String>,
    #[serde(default)]
    pub git_ref: Option<String>,
    #[serde(default)]
    pub git_key_path: Option<String>,
    /// An `ssh_key` credential by name; `""` detaches it.
    #[serde(default)]
    pub git_credential: Option<String>,
    /// Replaces the vault credentials (`[]` detaches them all).
    #[serde(default)]
    pub vault_credentials: Option<Vec<String>>,
    #[serde(default)]
    pub inventory_path: Option<String>,
    #[serde(default)]
    pub is_active: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProjectFilesQuery {
    /// A revision's digest (or its first 8+ hex digits); default the current revision.
    pub revision: Option<String>,
}

/// One entry of a revision.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProjectFileView {
    pub path: String,
    /// `file`, `dir` or `link`.
    pub kind: String,
    pub size: u64,
    /// Whether the file is one of the project's playbooks.
    pub playbook: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProjectFilesView {
    pub revision: RevisionView,
    pub files: Vec<ProjectFileView>,
}

// ---------------------------------------------------------------- jobs

/// Which servers a launch targets, by their environment and tags.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerSelector {
    #[serde(default)]
    pub environment: Option<String>,
    /// Every pair must be among the server's tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// ansible-playbook's run options, as typed fields (never free-form command-line text).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunOptions {
    /// `--tags`
    #[serde(default)]
    pub tags: Vec<String>,
    /// `--skip-tags`
    #[serde(default)]
    pub skip_tags: Vec<String>,
    /// `--check`: a dry run.
    #[serde(default)]
    pub check: bool,
    /// `--diff`
    #[serde(default)]
    pub diff: bool,
    /// 0 to 4: the number of `-v`.
    #[serde(default)]
    pub verbosity: u8,
}

/// A launch names its playbook one of two ways: `playbook` (a playbook's id or name), or
/// `project` and `playbook_path` (a project's playbook by its path in the tree, run from the
/// project's current revision). Exactly one of the two.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LaunchRequest {
    #[serde(default)]
    pub playbook: Option<IdOrName>,
    /// A project, by id or name (with `playbook_path`).
    #[serde(default)]
    pub project: Option<IdOrName>,
    /// The playbook's path in the project's tree, e.g. `site.yml` (with `project`).
    #[serde(default)]
    pub playbook_path: Option<String>,
    /// Servers by hostname or id…
    #[serde(default)]
    pub servers: Option<Vec<IdOrName>>,
    /// …or every active server matching a selector.
    #[serde(default, deserialize_with = "optional_object")]
    pub filter: Option<ServerSelector>,
    /// Keys starting with `ansible_` are for admins only.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub extra_vars: Option<JsonObject>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub skip_tags: Vec<String>,
    #[serde(default)]
    pub check: bool,
    #[serde(default)]
    pub diff: bool,
    #[serde(default)]
    pub verbosity: u8,
    /// Credentials by name for these jobs only (admins only), winning over the server's and
    /// project's of the same use: an `ssh_key`, a `become_password`, vault passwords.
    #[serde(default)]
    pub credentials: Vec<String>,
    /// How the launch rolls out (waves, approval, failure budgets); left out, all at once.
    #[serde(default)]
    pub rollout: Option<Rollout>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LaunchResponse {
    /// One job per server.
    pub jobs: Vec<JobView>,
    /// The run grouping them (its uuid).
    #[serde(default)]
    pub run: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NameRef {
    pub id: i32,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    /// The job's uuid.
    pub id: String,
    pub status: JobStatus,
    pub playbook: NameRef,
    pub server: NameRef,
    pub user_id: i32,
    pub agent: Option<NameRef>,
    #[schema(value_type = Option<Object>)]
    pub extra_vars: Option<JsonObject>,
    pub run_options: RunOptions,
    pub error_message: Option<String>,
    pub exit_code: Option<i32>,
    /// Why a pending job waits.
    pub pending_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub assigned_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// The project revision the job runs (none for a job launched before projects).
    #[serde(default)]
    pub revision: Option<RevisionView>,
    /// The credentials named at its launch (single reads only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Vec<NameRef>>,
    /// The template it was launched from.
    #[serde(default)]
    pub template: Option<NameRef>,
    /// The names of its secret answers, each shown as `********` (single reads only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_answers: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobQuery {
    pub status: Option<JobStatus>,
    pub user: Option<i32>,
    pub server: Option<i32>,
    pub playbook: Option<i32>,
    /// Created at or after (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Created before (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    pub limit: Option<i64>,
    /// Skips this many (old clients; deep offsets cost a scan: prefer `after`).
    pub offset: Option<i64>,
    /// The page after this cursor (a previous page's `next`); not with `offset`.
    pub after: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CancelResponse {
    /// `cancelled` (it had not reached an agent) or `requested` (the agent stops it).
    pub outcome: String,
    pub job: JobView,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LogLineView {
    pub line_number: i32,
    pub content: String,
    pub level: Option<String>,
    pub timestamp: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Lines after this line number (default 0).
    pub after: Option<i32>,
    /// At most this many (1–10,000, default 1,000).
    pub limit: Option<i64>,
    /// Only lines of this level (`ERROR`, `WARNING`, …; pages only).
    pub level: Option<String>,
    /// Only lines holding this text, case-insensitively (pages only; at most 200 bytes).
    pub q: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LogPage {
    pub lines: Vec<LogLineView>,
    /// Pass as `after` for the next page.
    pub next_after: i32,
    pub job_status: JobStatus,
    /// The job is final and there is nothing after this page.
    pub complete: bool,
    /// The highest line number stored so far, whatever the filter.
    #[serde(default)]
    pub last_line: i32,
    /// The job's output was archived (past the retention) and this page was read from the
    /// archive. Filtering (`level`, `q`) an archived log scans it: a page looks at 200,000
    /// lines at most and answers with `next_after` where it stopped (`complete` false).
    #[serde(default)]
    pub archived: bool,
}

/// The last event of a log stream.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LogEnd {
    pub status: JobStatus,
    pub exit_code: Option<i32>,
    pub error_message: Option<String>,
    pub last_line: i32,
}

// ---------------------------------------------------------------- tickets

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TicketView {
    /// The ticket's uuid.
    pub id: String,
    /// The job's uuid.
    pub job_id: String,
    pub created_by: i32,
    pub title: String,
    pub description: Option<String>,
    pub status: TicketStatus,
    pub priority: TicketPriority,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTicketRequest {
    /// The job's uuid.
    pub job_id: String,
    pub title: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub priority: Option<TicketPriority>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TicketPatchRequest {
    #[serde(default)]
    pub status: Option<TicketStatus>,
    #[serde(default)]
    pub priority: Option<TicketPriority>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TicketQuery {
    pub status: Option<TicketStatus>,
    pub priority: Option<TicketPriority>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

// ---------------------------------------------------------------- agents

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AgentView {
    pub id: i32,
    pub uuid: String,
    pub name: String,
    #[schema(value_type = Option<Object>)]
    pub labels: Option<JsonObject>,
    pub online: bool,
    pub connected_controller: Option<String>,
    pub version: Option<String>,
    pub hostname: Option<String>,
    pub ansible_version: Option<String>,
    pub capacity: i32,
    pub cert_expires_at: Option<DateTime<Utc>>,
    pub revoked: bool,
    pub last_seen: Option<DateTime<Utc>>,
    /// Since when it has been gone, while it has not come back.
    pub lost_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEnrollmentTokenRequest {
    /// The agent's name.
    pub name: String,
    /// The agent's labels, e.g. `{"dc": "fra1"}`: they decide which servers it may run.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Default 24.
    #[serde(default)]
    pub ttl_hours: Option<u32>,
}

/// An install bundle for one new agent: a tar.gz with the agent binary, its systemd unit, a
/// one-time enrolment token (mode 0600) and `install.yml`, a playbook that installs, enrols and
/// starts the agent over SSH.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAgentBundleRequest {
    /// The agent's name (letters, digits, `.`, `_`, `-`); the archive unpacks into
    /// `outpost-agent-<name>/`.
    pub name: String,
    /// The agent's labels, e.g. `{"dc": "fra1"}`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Hours the token stays valid; default 24.
    #[serde(default)]
    pub ttl_hours: Option<u32>,
    /// Hosts the bastion reaches the controller at, among the names of its certificate;
    /// default: those names, loopback ones left out.
    #[serde(default)]
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EnrollmentTokenView {
    pub id: i32,
    pub name: String,
    #[schema(value_type = Option<Object>)]
    pub labels: Option<JsonObject>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub agent_id: Option<i32>,
    pub created_by: Option<i32>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EnrollmentTokenCreated {
    /// The one-line token for `outpost-agent enroll`; shown only now.
    pub token: String,
    pub record: EnrollmentTokenView,
}

// ---------------------------------------------------------------- audit

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditView {
    pub id: i64,
    pub user_id: Option<i32>,
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<i32>,
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Value>,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    pub timestamp: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    pub user: Option<i32>,
    pub action: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<i32>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
    /// The page after this cursor (a previous page's `next`); not with `offset`.
    pub after: Option<String>,
}

// ---------------------------------------------------------------- health

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
    #[serde(default)]
    pub checks: BTreeMap<String, String>,
}

/// How a launch rolls out. Left out: every job may start at once, no budget.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// A first wave of this many servers…
    #[serde(default)]
    pub canary: Option<u32>,
    /// …or of every server in this datacenter (the value of the routing label, e.g. `fra1`).
    #[serde(default)]
    pub canary_datacenter: Option<String>,
    /// Then batches of this many servers (`"10"`) or this share (`"10%"`).
    #[serde(default)]
    pub batch: Option<String>,
    /// Whether a batch takes its number from each datacenter (default: from the whole run).
    #[serde(default)]
    pub batch_per_datacenter: bool,
    /// Whether each wave after the first waits for an operator's approval.
    #[serde(default)]
    pub pause: bool,
    /// Failed servers the run tolerates (`"2"` or `"2%"`); one more stops it: its pending jobs
    /// are cancelled, running ones finish.
    #[serde(default)]
    pub max_failures: Option<String>,
    /// Unreachable servers the run tolerates, counted apart (default: they do not stop it).
    #[serde(default)]
    pub max_unreachable: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_structs_are_read_from_objects_only() {
        let patch: ObjectOnly<UserPatchRequest> =
            serde_json::from_str(r#"{"role": "viewer"}"#).expect("an object");
        assert_eq!(patch.0.role, Some(Role::Viewer));
        // What serde's derived struct alone would take as its fields in order.
        assert!(serde_json::from_str::<UserPatchRequest>("[null, null]").is_ok());
        let refused = serde_json::from_str::<ObjectOnly<UserPatchRequest>>("[null, null]")
            .expect_err("an array is not a request");
        assert!(refused.is_data() && refused.to_string().contains("a JSON object"));

        let launch = |filter: &str| {
            serde_json::from_str::<LaunchRequest>(&format!(
                r#"{{"playbook": "site", "filter": {filter}}}"#
            ))
        };
        assert!(launch("[]").is_err(), "a selector given as an array");
        assert!(launch(r#"[null, {"dc": "x"}]"#).is_err());
        let selected = launch(r#"{"tags": {"dc": "fra1"}}"#).expect("a selector");
        assert_eq!(selected.filter.map(|f| f.tags.len()), Some(1));
        assert!(launch("null").expect("no selector").filter.is_none());
        let absent: LaunchRequest =
            serde_json::from_str(r#"{"playbook": 3, "servers": ["web1"]}"#).expect("no filter");
        assert!(absent.filter.is_none());
    }
}
