//! `outpost-controller token`: a one-time enrolment token for a new agent, printed once (only
//! its hash is kept).

use outpost_controller::config::Settings;
use outpost_controller::enroll;
use outpost_controller::pki::{self, PkiPaths};
use outpost_controller::store::audit::Actor;

#[derive(clap::Args)]
pub struct Args {
    /// The agent's name (unique), e.g. bastion-fra1.
    #[arg(long)]
    name: String,
    /// A label for the agent, e.g. dc=fra1 (repeatable); servers tagged alike are routed to it.
    #[arg(long = "label", value_parser = outpost_protocol::message::parse_label)]
    labels: Vec<(String, String)>,
    /// Hours until the token expires.
    #[arg(long, default_value_t = 24)]
    ttl_hours: u64,
}

pub async fn run(settings: &Settings, args: &Args) -> anyhow::Result<()> {
    let pki = pki::load(&PkiPaths::new(&settings.data_dir))?;
    let store = super::store(settings).await?;
    store.migrate_up().await?;
    let ttl = chrono::Duration::hours(i64::try_from(args.ttl_hours).unwrap_or(24));
    let issued = enroll::issue_token(
        &store,
        &pki.ca.fingerprint(),
        &args.name,
        &args.labels,
        ttl,
        &Actor::system(),
    )
    .await?;
    let expires = issued.record.expires_at;
    eprintln!(
        "enrolment token for agent '{}', valid until {expires} (shown once):",
        args.name
    );
    println!("{}", issued.token.encode());
    store.close().await;
    Ok(())
}
