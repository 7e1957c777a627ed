//! `outpost`: the Outpost admin CLI, a client of the controller's HTTPS API only (it links no
//! database code). Conventions of kubectl and the salt CLI: named contexts, tables for people,
//! `--json` for scripts, ansible-playbook's own spellings for run options.
//!
//! - [`contexts`]: the controllers it knows and their tokens; [`trust`]: pinning a CA by
//!   fingerprint on first login.
//! - [`commands`]: one function per subcommand; [`follow`]: live logs with resume.
//! - [`inventory`]: reading Ansible inventories; [`output`]: tables, colour and JSON.
//! - [`terminal`]: text from hosts and the controller, escaped before it reaches the terminal.

mod commands;
mod contexts;
mod follow;
mod inventory;
mod output;
mod terminal;
mod trust;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

/// The Outpost admin CLI: log in to a controller, manage servers, playbooks, projects,
/// credentials, agents and users,
/// launch jobs and follow their output, work tickets, read the audit trail.
///
/// Exit codes: 0 success; 1 a job failed; 2 a job was cancelled; 3 a usage or API error.
#[derive(Parser)]
#[command(name = "outpost", version, propagate_version = true)]
pub struct Cli {
    /// Use this context instead of the current one.
    #[arg(long, global = true, env = "OUTPOST_CONTEXT")]
    context: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Output format: `wide` adds columns.
    #[arg(short = 'o', long = "output", global = true, value_parser = ["wide"])]
    output: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Log in to a controller and keep its token (mode 0600) as a named context.
    Login(LoginArgs),
    /// End the current token and forget it.
    Logout,
    /// Who the current token belongs to.
    Whoami,
    /// Named controllers: list them, or switch.
    #[command(subcommand)]
    Context(ContextCmd),
    /// The inventory.
    #[command(subcommand)]
    Server(ServerCmd),
    /// Playbooks.
    #[command(subcommand)]
    Playbook(PlaybookCmd),
    /// Projects: git repositories and uploaded archives whose playbooks run with their roles,
    /// templates, files, group_vars and collections.
    #[command(subcommand)]
    Project(ProjectCmd),
    /// Stored secrets (admins): SSH private keys, become passwords and vault passwords that
    /// jobs use.
    ///
    /// A secret is read from a file (--secret-file PATH, `-` for standard input) or asked for
    /// on the terminal without echo; it is never taken from the command line or the
    /// environment. The controller checks it, stores it sealed, and never shows it again:
    /// listings show names, kinds, vault ids and an SSH key's public fingerprint only.
    /// Attach credentials to servers (`server add/update --ssh-credential/--become-credential`),
    /// projects (`project add/update --git-credential/--vault-credential`) or one launch
    /// (`job run --credential`).
    #[command(subcommand, visible_alias = "credentials")]
    Credential(CredentialCmd),
    /// Schedules: job templates run by a cron expression in a time zone, and their runs.
    #[command(subcommand)]
    Schedule(commands::schedules::ScheduleCmd),
    /// Blackout windows: when jobs of an environment must not start.
    #[command(subcommand)]
    Blackout(commands::blackouts::BlackoutCmd),
    /// Saved launches with a survey: operators launch them with answers, admins write them.
    ///
    /// Example:
    ///   outpost template launch deploy -a app=shop -a region=eu --secret-answer token --follow
    #[command(subcommand, visible_alias = "templates")]
    Template(TemplateCmd),
    /// Notifications (admins): channels (signed webhooks, Slack/Mattermost, email), routing
    /// rules by event, environment, priority and server tag, and the delivery log.
    ///
    /// A channel's URL and secret are read from a file (`-` for standard input) or asked for
    /// on the terminal without echo, never taken from the command line.
    #[command(subcommand)]
    Notify(commands::notify::NotifyCmd),
    /// Launch, list, follow and cancel jobs.
    #[command(subcommand)]
    Job(JobCmd),
    /// Runs: one launch's jobs as a whole (its rollout waves, failure budget, one ticket);
    /// cancel one, approve its next wave, relaunch it for its failed servers.
    #[command(subcommand)]
    Run(RunCmd),
    /// Tickets opened by failed jobs (and by people).
    #[command(subcommand)]
    Ticket(TicketCmd),
    /// Agents on bastion hosts, and enrolment tokens for new ones.
    #[command(subcommand)]
    Agent(AgentCmd),
    /// Accounts and roles (admins).
    #[command(subcommand)]
    User(UserCmd),
    /// The audit trail (admins).
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Shell completions: `outpost completions bash > /etc/bash_completion.d/outpost`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Args)]
pub struct LoginArgs {
    /// The controller's API, e.g. https://ctl.example.com:8443 [default: the context's].
    pub url: Option<String>,
    /// The user to log in as [default: the context's, else admin].
    #[arg(short, long)]
    pub username: Option<String>,
    /// Trust the controller whose CA has this SHA-256 fingerprint (printed by
    /// `outpost-controller init`; also inside every enrolment token).
    #[arg(long, conflicts_with = "ca_file")]
    pub ca_fingerprint: Option<String>,
    /// Trust the CA in this PEM file (your own CA, or <data-dir>/pki/ca.pem).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Name of the context to save [default: the URL's host].
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Subcommand)]
pub enum ContextCmd {
    /// The contexts, the current one marked.
    List,
    /// Make a context the current one.
    Use { name: String },
}

#[derive(Subcommand)]
pub enum ServerCmd {
    /// Add a server.
    Add(ServerFields),
    /// List servers.
    List {
        #[arg(long)]
        env: Option<String>,
        /// `key=value`: servers whose tags hold it.
        #[arg(short = 'l', long = "selector")]
        selector: Option<String>,
        /// Include deactivated servers.
        #[arg(long)]
        all: bool,
    },
    /// Show one server (hostname or id).
    Show { server: String },
    /// Change a server's fields.
    Update {
        server: String,
        #[command(flatten)]
        fields: ServerPatchFields,
    },
    /// Deactivate a server (it keeps its jobs' history).
    Deactivate { server: String },
    /// Read an Ansible inventory into servers: adds new hosts, updates known ones (by hostname).
    ///
    /// The inventory is read by ansible itself, `ansible-inventory -i FILE --list`, so host
    /// ranges (web[01:04]), groups of groups, the group_vars/ and host_vars/ directories next to
    /// it, YAML and inventory plugins read exactly as ansible-playbook reads them. Each server
    /// keeps its groups (as chains, e.g. prod > web), so `hosts: web` and group_vars/web.yml
    /// apply to its jobs. Group vars are merged into each server's host vars, as ansible
    /// merges them. Vault-encrypted vars cannot be read yet.
    ///
    /// Addresses: an IP address in ansible_host (or as the host's name) is the server's address.
    /// A host known by a DNS name only is resolved on this machine for the record (first IPv4,
    /// else IPv6) and keeps the name as ansible_host, so the bastion connects by name through
    /// its own DNS; a name that does not resolve here is refused, naming the host.
    ///
    /// When ansible-inventory is not on PATH, Outpost's own INI/YAML reader is used instead (and
    /// says so): it does not support ranges, group_vars/ and host_vars/ directories or plugins.
    Import {
        /// The inventory: a file (INI, YAML, a plugin's configuration) or a directory.
        file: PathBuf,
        /// Show what would change, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// The ansible-inventory program to run; when given, there is no fallback.
        #[arg(long, value_name = "PROGRAM")]
        ansible_inventory: Option<PathBuf>,
        /// How long ansible-inventory may take (inventory plugins may ask cloud APIs).
        #[arg(long, value_name = "SECONDS", default_value_t = 120)]
        timeout: u64,
    },
}

#[derive(Args)]
pub struct ServerFields {
    pub hostname: String,
    #[arg(long)]
    pub ip: String,
    #[arg(long, default_value = "linux")]
    pub os: String,
    #[arg(long)]
    pub port: Option<i32>,
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long)]
    pub key: Option<String>,
    #[arg(long)]
    pub env: Option<String>,
    /// A tag `key=value` (repeatable), e.g. --tag dc=fra1.
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    #[arg(long)]
    pub description: Option<String>,
    /// An ssh-key credential (by name) that jobs reach the server with, instead of --key.
    #[arg(long, value_name = "CREDENTIAL")]
    pub ssh_credential: Option<String>,
    /// A become-password credential (by name) for `become` on the server.
    #[arg(long, value_name = "CREDENTIAL")]
    pub become_credential: Option<String>,
}

#[derive(Args)]
pub struct ServerPatchFields {
    #[arg(long)]
    pub ip: Option<String>,
    #[arg(long)]
    pub port: Option<i32>,
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long)]
    pub key: Option<String>,
    #[arg(long)]
    pub env: Option<String>,
    /// Replaces the tags: `key=value` (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    #[arg(long)]
    pub description: Option<String>,
    /// Attach this ssh-key credential (by name): jobs reach the server with it.
    #[arg(long, value_name = "CREDENTIAL")]
    pub ssh_credential: Option<String>,
    /// Detach the server's ssh-key credential.
    #[arg(long, conflicts_with = "ssh_credential")]
    pub no_ssh_credential: bool,
    /// Attach this become-password credential (by name).
    #[arg(long, value_name = "CREDENTIAL")]
    pub become_credential: Option<String>,
    /// Detach the server's become-password credential.
    #[arg(long, conflicts_with = "become_credential")]
    pub no_become_credential: bool,
}

#[derive(Subcommand)]
pub enum PlaybookCmd {
    /// Upload a playbook file.
    Add {
        file: PathBuf,
        /// [default: the file's name without .yml]
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Upload a new version of a playbook.
    Update {
        playbook: String,
        file: PathBuf,
    },
    List,
    /// Show a playbook with its YAML and hash.
    Show {
        playbook: String,
    },
}

#[derive(Subcommand)]
pub enum ProjectCmd {
    /// Add a project: a git repository (--git), or without --git one whose tree comes with
    /// `outpost project upload`. A git project syncs at once: the controller fetches the ref,
    /// installs collections/requirements.yml and roles/requirements.yml with ansible-galaxy,
    /// and records the tree as a revision.
    #[command(visible_alias = "add")]
    Create {
        name: String,
        /// https://…, ssh://…, git://…, user@host:path, file://… or an absolute path.
        #[arg(long)]
        git: Option<String>,
        /// Branch, tag or commit [default: the remote's default branch].
        #[arg(long = "ref")]
        git_ref: Option<String>,
        /// A deploy key file ON THE CONTROLLER (absolute path), for ssh:// and user@host:path.
        #[arg(long)]
        deploy_key: Option<String>,
        /// The project's inventory file, relative to its root (its directory's group_vars/ and
        /// host_vars/ apply to jobs).
        #[arg(long)]
        inventory: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        credentials: ProjectCredentials,
    },
    /// Change a project's settings; options left out stay as they are, an empty value ("")
    /// clears an optional one.
    Update {
        project: String,
        /// A new name.
        #[arg(long)]
        name: Option<String>,
        /// Git projects: the repository's URL.
        #[arg(long)]
        git: Option<String>,
        /// Git projects: branch, tag or commit.
        #[arg(long = "ref")]
        git_ref: Option<String>,
        /// Git projects: a deploy key file ON THE CONTROLLER (absolute path).
        #[arg(long)]
        deploy_key: Option<String>,
        #[arg(long)]
        inventory: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        credentials: ProjectCredentials,
        /// Detach the project's git credential.
        #[arg(long, conflicts_with = "git_credential")]
        no_git_credential: bool,
        /// Detach all the project's vault credentials.
        #[arg(long, conflicts_with = "vault_credentials")]
        no_vault_credentials: bool,
    },
    /// Upload a .tar.gz (or .tar) of a project's tree: a new revision of an archive project
    /// (made first if NAME is new).
    Upload {
        name: String,
        file: PathBuf,
    },
    List,
    /// A project with its sync state, current revision and playbooks.
    Show {
        project: String,
    },
    /// Sync a git project now; --wait waits for the sync to end (exit 1 if it failed).
    Sync {
        project: String,
        #[arg(long)]
        wait: bool,
    },
    /// A project's revisions, newest first.
    Revisions {
        project: String,
    },
    /// The files of a revision (the current one, or --revision DIGEST), playbooks marked.
    Files {
        project: String,
        #[arg(long)]
        revision: Option<String>,
    },
}

/// A project's credentials, by name.
#[derive(Args)]
pub struct ProjectCredentials {
    /// An ssh-key credential that git fetches with (wins over --deploy-key).
    #[arg(long, value_name = "CREDENTIAL")]
    pub git_credential: Option<String>,
    /// A vault-password credential that opens the project's vault-encrypted files
    /// (repeatable, one per vault id; on update the list replaces the project's).
    #[arg(long = "vault-credential", value_name = "CREDENTIAL")]
    pub vault_credentials: Vec<String>,
}

#[derive(Subcommand)]
pub enum CredentialCmd {
    /// Store a new credential. The secret comes from --secret-file or a prompt, never from the
    /// command line.
    Add {
        name: String,
        #[arg(long, value_enum)]
        kind: CredentialKindArg,
        /// vault-password only: the vault id it opens, as in `--vault-id ID@…` [default:
        /// default].
        #[arg(long, value_name = "ID")]
        vault_id: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        secret: SecretArgs,
    },
    /// The credentials: name, kind, vault id, public key fingerprint, last change.
    List,
    /// One credential (name or id) and where it is used.
    Show { credential: String },
    /// Replace a credential's secret (and an SSH key's passphrase), keeping its name and where
    /// it is attached.
    Replace {
        credential: String,
        /// vault-password only: a new vault id.
        #[arg(long, value_name = "ID")]
        vault_id: Option<String>,
        #[command(flatten)]
        secret: SecretArgs,
    },
    /// Give a credential a new name (attachments follow it).
    Rename {
        credential: String,
        new_name: String,
    },
    /// Delete a credential; refused while a server, project or pending job uses it.
    #[command(visible_alias = "delete")]
    Rm { credential: String },
}

/// What a credential holds.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum CredentialKindArg {
    /// An SSH private key (OpenSSH or PEM), for servers' SSH and projects' git.
    #[value(alias = "ssh_key")]
    SshKey,
    /// The password `become` (sudo) uses on servers.
    #[value(alias = "become_password")]
    BecomePassword,
    /// An ansible-vault password, for one vault id.
    #[value(alias = "vault_password")]
    VaultPassword,
}

/// Where a secret comes from: a file or the terminal, never an argument or the environment.
#[derive(Args)]
pub struct SecretArgs {
    /// Read the secret (the private key, or the password) from this file; `-` reads standard
    /// input. One line break at the end of a password is dropped. Without this option a
    /// password is asked for on the terminal, unechoed.
    #[arg(long, value_name = "PATH")]
    pub secret_file: Option<PathBuf>,
    /// ssh-key only: read the key's passphrase from this file (`-`: standard input).
    #[arg(long, value_name = "PATH", conflicts_with = "ask_passphrase")]
    pub passphrase_file: Option<PathBuf>,
    /// ssh-key only: ask for the key's passphrase on the terminal, unechoed.
    #[arg(long)]
    pub ask_passphrase: bool,
}

#[derive(Subcommand)]
pub enum TemplateCmd {
    /// The templates: name, what they run, how many questions.
    List,
    /// One template (name or id), with its survey.
    Show { template: String },
    /// Launch a template with answers to its survey; a refusal names each bad answer.
    ///
    /// Example:
    ///   outpost template launch deploy -a app=shop -a roles=web,db --secret-answer token --follow
    Launch {
        template: String,
        /// An answer, `name=value` (repeatable). Multi-choice answers are `a,b`.
        #[arg(short = 'a', long = "answer", value_name = "NAME=VALUE")]
        answers: Vec<String>,
        /// A secret answer: `NAME` asks for it on the terminal, unechoed; `NAME=PATH` reads it
        /// from a file (`-`: standard input). Never given on the command line itself.
        #[arg(long = "secret-answer", value_name = "NAME[=PATH]")]
        secret_answers: Vec<String>,
        /// Stream every server's log until the jobs end; the exit code says how they ended.
        #[arg(short, long)]
        follow: bool,
        /// With --follow: print lines as the hosts wrote them, escape sequences included.
        #[arg(long, requires = "follow")]
        raw: bool,
    },
    /// Create a template from a YAML or JSON file (admins).
    ///
    /// The file holds: name, description, playbook (or project + playbook_path), servers (or
    /// filter: {environment, tags}), extra_vars, options {tags, skip_tags, check, diff,
    /// verbosity}, time_limit_secs, survey: [{name, type, label, help, required, default, pattern,
    /// max_length, min, max, choices}]; type is text, multiline, integer, choice,
    /// multi_choice or secret.
    Create {
        #[arg(long, value_name = "PATH")]
        file: PathBuf,
    },
    /// Replace a template whole from a file (admins).
    Update {
        template: String,
        #[arg(long, value_name = "PATH")]
        file: PathBuf,
    },
    /// Delete a template (admins); its jobs are kept.
    #[command(visible_alias = "delete")]
    Rm { template: String },
}

#[derive(Subcommand)]
pub enum JobCmd {
    /// Run a playbook on servers (one job per server).
    Run(Box<RunArgs>),
    /// List jobs, newest first. A full page ends with the command for the next (older) one.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Start after this cursor (the `next` a previous page printed).
        #[arg(long)]
        after: Option<String>,
    },
    /// Show one job.
    Show { job: String },
    /// Print a job's log; --follow streams it to the end.
    Logs {
        job: String,
        #[arg(short, long)]
        follow: bool,
        /// Start after this line.
        #[arg(long, default_value_t = 0)]
        since_line: i32,
        /// Print the lines as the host wrote them, terminal escape sequences included (by
        /// default they are shown escaped, as `\x1b`).
        #[arg(long)]
        raw: bool,
    },
    /// Cancel a job.
    Cancel { job: String },
}

#[derive(Subcommand)]
pub enum RunCmd {
    /// List runs, newest first.
    List {
        /// running, succeeded, failed, partially_failed, cancelled, stopped_by_budget.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Show a run: counts per datacenter and wave, its budget, its jobs and tickets.
    Show {
        run: String,
        /// Print a progress line per datacenter until the run ends; the exit code says how
        /// it ended (0 succeeded, 2 cancelled, 1 otherwise).
        #[arg(short, long)]
        follow: bool,
    },
    /// Cancel a run: jobs not started are cancelled, running ones are stopped.
    Cancel { run: String },
    /// Let the next wave of a paused rollout start (operators).
    Approve { run: String },
    /// Run the failed servers of a run again: same playbook, revision, variables, options.
    Relaunch {
        run: String,
        /// Also the servers that were unreachable.
        #[arg(long)]
        unreachable: bool,
        /// Follow the new run's progress.
        #[arg(short, long)]
        follow: bool,
    },
}

#[derive(Args)]
pub struct RunArgs {
    /// Playbook name or id (or give --project and --playbook).
    #[arg(required_unless_present = "project")]
    pub playbook: Option<String>,
    /// A project (name or id) whose playbook runs, from its current revision…
    #[arg(long, requires = "playbook_path", conflicts_with = "playbook")]
    pub project: Option<String>,
    /// …and the playbook's path in the project's tree, e.g. site.yml.
    #[arg(long = "playbook", requires = "project")]
    pub playbook_path: Option<String>,
    /// Servers by hostname or id (repeatable).
    #[arg(long = "server")]
    pub servers: Vec<String>,
    /// Every active server of an environment.
    #[arg(long)]
    pub env: Option<String>,
    /// Servers whose tags hold `key=value` (repeatable, all must match).
    #[arg(short = 'l', long = "selector")]
    pub selector: Vec<String>,
    /// Extra vars: `key=value`, or `@file.json` / `@file.yml` (repeatable).
    #[arg(short = 'e', long = "extra-vars")]
    pub extra_vars: Vec<String>,
    /// Only run plays and tasks tagged with these (comma-separated).
    #[arg(long)]
    pub tags: Option<String>,
    /// Skip plays and tasks tagged with these.
    #[arg(long)]
    pub skip_tags: Option<String>,
    /// Dry run: report what would change.
    #[arg(long)]
    pub check: bool,
    /// Show differences in changed files.
    #[arg(long)]
    pub diff: bool,
    /// More output from ansible (-v … -vvvv).
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Stream every server's log until the jobs end; the exit code says how they ended.
    #[arg(short, long)]
    pub follow: bool,
    /// With --follow: print the lines as the hosts wrote them, terminal escape sequences
    /// included (by default they are shown escaped, as `\x1b`).
    #[arg(long, requires = "follow")]
    pub raw: bool,
    /// A credential (by name) for these jobs only, winning over the server's and project's
    /// of the same use (repeatable; admins only).
    #[arg(long = "credential", value_name = "CREDENTIAL")]
    pub credentials: Vec<String>,
    /// Roll out in waves: a first wave of N servers…
    #[arg(long, help_heading = "Rollout")]
    pub canary: Option<u32>,
    /// …or of every server of this datacenter (the value of its routing label).
    #[arg(long, conflicts_with = "canary", help_heading = "Rollout")]
    pub canary_dc: Option<String>,
    /// Then batches of N servers or N% (e.g. 10 or 10%).
    #[arg(long, help_heading = "Rollout")]
    pub batch: Option<String>,
    /// Take each batch from every datacenter (default: from the whole run).
    #[arg(long, requires = "batch", help_heading = "Rollout")]
    pub per_dc: bool,
    /// Wait for an operator's `outpost run approve` before each wave after the first.
    #[arg(long, help_heading = "Rollout")]
    pub pause: bool,
    /// Failed servers the run tolerates (N or N%); one more cancels its pending jobs.
    #[arg(long, help_heading = "Rollout")]
    pub max_failures: Option<String>,
    /// Unreachable servers the run tolerates, counted apart (default: no limit).
    #[arg(long, help_heading = "Rollout")]
    pub max_unreachable: Option<String>,
}

#[derive(Subcommand)]
pub enum TicketCmd {
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        priority: Option<String>,
    },
    Show {
        ticket: String,
    },
    /// Change status, priority or title.
    Update {
        ticket: String,
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        priority: Option<String>,
        #[arg(long)]
        title: Option<String>,
    },
    /// Mark resolved.
    Resolve {
        ticket: String,
    },
}

#[derive(Subcommand)]
pub enum AgentCmd {
    List,
    /// Revoke an agent (name or id): it is dropped and can never connect again.
    Revoke {
        agent: String,
    },
    /// Make a one-time enrolment token for a new agent.
    Token {
        #[arg(long)]
        name: String,
        /// `key=value` (repeatable): the agent's labels, e.g. dc=fra1.
        #[arg(long = "label")]
        labels: Vec<String>,
        #[arg(long, default_value_t = 24)]
        ttl_hours: u32,
    },
    /// Download an install bundle for a new agent (admin): the agent binary, its unit, a
    /// one-time token and install.yml, which installs, enrols and starts the agent over SSH:
    /// `tar xzf FILE && cd outpost-agent-NAME && ansible-playbook -i BASTION, install.yml`.
    Bundle {
        #[arg(long)]
        name: String,
        /// `key=value` (repeatable): the agent's labels, e.g. dc=fra1.
        #[arg(long = "label")]
        labels: Vec<String>,
        /// A host the bastion reaches the controller at, among its certificate's names
        /// (repeatable) [default: those names, loopback ones left out].
        #[arg(long = "address", value_name = "HOST")]
        addresses: Vec<String>,
        #[arg(long, default_value_t = 24)]
        ttl_hours: u32,
        /// Where to save it [default: outpost-agent-NAME.tar.gz]; it holds a secret, so it is
        /// written 0600 and never over an existing file.
        #[arg(short, long, value_name = "FILE")]
        output: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum UserCmd {
    List,
    /// Add a user; they change the password at first login.
    Add {
        username: String,
        #[arg(long)]
        email: String,
        #[arg(long, default_value = "viewer")]
        role: String,
    },
    /// Change role, email or whether the account is active.
    Update {
        user: String,
        #[arg(long)]
        role: Option<String>,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        active: Option<bool>,
    },
    /// Set a password (your own, or as an admin someone else's).
    Passwd {
        user: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum AuditCmd {
    /// List audit records, newest first. A full page ends with the command for the next one.
    List {
        #[arg(long)]
        action: Option<String>,
        #[arg(long)]
        resource_type: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Start after this cursor (the `next` a previous page printed).
        #[arg(long)]
        after: Option<String>,
    },
}

/// A usage or API error: exit code 3.
const FAILED: u8 = 3;

/// What the CLI calls itself in its requests: the controller's audit trail records it.
pub const USER_AGENT: &str = concat!("outpost/", env!("CARGO_PKG_VERSION"));

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let help = matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp
                    | clap::error::ErrorKind::DisplayVersion
                    | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            );
            let _ = e.print();
            return ExitCode::from(if help { 0 } else { FAILED });
        }
    };
    if let Command::Completions { shell } = &cli.command {
        clap_complete::generate(
            *shell,
            &mut Cli::command(),
            "outpost",
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::from(FAILED);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // One line, with what to do; never a debug dump. The message may quote the
            // controller (or a name someone else chose): escaped for the terminal.
            let message = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {}", terminal::escape(&message));
            ExitCode::from(FAILED)
        }
    }
}
