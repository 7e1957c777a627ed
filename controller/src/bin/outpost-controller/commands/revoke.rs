//! `outpost-controller revoke`: an agent's sessions are dropped and it can never connect again;
//! the jobs it held are settled at once (failed if started, queued again if not).

use anyhow::Context;
use outpost_controller::config::Settings;
use outpost_controller::store::audit::Actor;

#[derive(clap::Args)]
pub struct Args {
    /// The agent's name (as given to its token) or uuid.
    agent: String,
}

pub async fn run(settings: &Settings, args: &Args) -> anyhow::Result<()> {
    let agent = &args.agent;
    let store = super::store(settings).await?;
    let found = match store.get_agent_by_name(agent).await {
        Ok(a) => a,
        Err(_) => store
            .get_agent_by_uuid(agent)
            .await
            .with_context(|| format!("no agent named '{agent}'"))?,
    };
    let revoked = store.revoke_agent(found.id, &Actor::system()).await?;
    outpost_controller::lifecycle::Lifecycle::new(store.clone())
        .settle_revoked(&revoked)
        .await?;
    println!(
        "agent {} ({}) revoked; live sessions close within seconds, and the jobs it held are settled",
        found.name, found.uuid
    );
    store.close().await;
    Ok(())
}
