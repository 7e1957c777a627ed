//! Where a job may run: the routing rule (a server's routing tags must match the agent's
//! labels) and the choice among the agents that qualify (least loaded, stable tie-break).

use std::collections::BTreeMap;

use super::AgentLink;
use crate::model::{label_text, AgentId, Server};

/// The agent to hand a job for `server` to, or why there is none right now (kept as the job's
/// pending reason).
pub(super) fn place<'a>(
    agents: impl Iterator<Item = &'a AgentLink>,
    server: &Server,
    routing_keys: &[String],
) -> Result<AgentId, String> {
    let tags: BTreeMap<String, String> = server
        .tags
        .as_ref()
        .map(|t| {
            t.0.iter()
                .map(|(k, v)| (k.clone(), label_text(v)))
                .collect()
        })
        .unwrap_or_default();
    let required: Vec<(&String, &String)> = routing_keys
        .iter()
        .filter_map(|k| tags.get_key_value(k))
        .collect();
    let describe = || {
        if required.is_empty() {
            "any agent".to_owned()
        } else {
            required
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        }
    };
    let allowed: Vec<&AgentLink> = agents
        .filter(|a| required.iter().all(|(k, v)| a.labels.get(*k) == Some(*v)))
        .collect();
    if allowed.is_empty() {
        return Err(format!("no connected agent matches {}", describe()));
    }
    allowed
        .iter()
        .filter(|a| !a.draining && a.in_flight < a.capacity)
        // Lowest load first; the uuid breaks ties so the choice is stable.
        .min_by(|a, b| {
            let la = f64::from(a.in_flight) / f64::from(a.capacity.max(1));
            let lb = f64::from(b.in_flight) / f64::from(b.capacity.max(1));
            la.total_cmp(&lb).then(a.uuid.cmp(&b.uuid))
        })
        .map(|a| a.id)
        .ok_or_else(|| format!("all {} agent(s) for {} are busy", allowed.len(), describe()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::samples::server;
    use uuid::Uuid;

    fn agent(id: i32, labels: &[(&str, &str)], capacity: u32, in_flight: u32) -> AgentLink {
        let (commands, _) = tokio::sync::mpsc::channel(1);
        AgentLink {
            id: AgentId(id),
            uuid: Uuid::from_u128(id as u128),
            name: format!("a{id}"),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            capacity,
            in_flight,
            draining: false,
            session: 1,
            commands,
            conn: None,
        }
    }

    fn keys() -> Vec<String> {
        vec!["dc".into()]
    }

    #[test]
    fn routing_tags_must_match_labels() {
        let agents = [
            agent(1, &[("dc", "fra1")], 4, 0),
            agent(2, &[("dc", "nyc1")], 4, 0),
        ];
        assert_eq!(
            place(
                agents.iter(),
                &server(serde_json::json!({"dc": "nyc1", "role": "web"})),
                &keys()
            ),
            Ok(AgentId(2))
        );
        assert_eq!(
            place(
                agents.iter(),
                &server(serde_json::json!({"dc": "sfo1"})),
                &keys()
            ),
            Err("no connected agent matches dc=sfo1".into())
        );
        // Tags that are not routing keys do not restrict anything.
        assert!(place(
            agents.iter(),
            &server(serde_json::json!({"role": "db"})),
            &keys()
        )
        .is_ok());
    }

    #[test]
    fn least_loaded_wins_and_full_or_draining_agents_are_skipped() {
        let mut agents = [
            agent(1, &[], 4, 3),
            agent(2, &[], 4, 1),
            agent(3, &[], 1, 1),
        ];
        assert_eq!(
            place(agents.iter(), &server(serde_json::json!({})), &keys()),
            Ok(AgentId(2))
        );
        agents[1].draining = true;
        assert_eq!(
            place(agents.iter(), &server(serde_json::json!({})), &keys()),
            Ok(AgentId(1))
        );
        agents[0].in_flight = 4;
        assert_eq!(
            place(agents.iter(), &server(serde_json::json!({})), &keys()),
            Err("all 3 agent(s) for any agent are busy".into())
        );
    }

    #[test]
    fn ties_break_the_same_way_every_time() {
        let agents = [agent(7, &[], 2, 1), agent(3, &[], 4, 2)];
        for _ in 0..3 {
            assert_eq!(
                place(agents.iter(), &server(serde_json::json!({})), &keys()),
                Ok(AgentId(3))
            );
        }
    }
}
