//! `outpost-controller agents`: the enrolled agents, one line each.

use outpost_controller::config::Settings;
use outpost_controller::model::Paging;

pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    let store = super::store(settings).await?;
    let page = store.list_agents(Paging::new(1000, 0)).await?;
    println!(
        "{:<24} {:<36} {:<8} {:<22} LABELS",
        "NAME", "UUID", "STATE", "LAST SEEN"
    );
    for a in page.items {
        let state = if a.revoked {
            "revoked"
        } else if a.connected_controller.is_some() {
            "online"
        } else {
            "offline"
        };
        let seen = a
            .last_seen
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_else(|| "never".into());
        let labels: Vec<String> = a
            .label_pairs()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!(
            "{:<24} {:<36} {:<8} {:<22} {}",
            a.name,
            a.uuid,
            state,
            seen,
            labels.join(",")
        );
    }
    store.close().await;
    Ok(())
}
