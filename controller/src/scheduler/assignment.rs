//! What an agent is handed: the playbook (read from disk once per version and checked against
//! its recorded SHA-256), the target server and the merged variables.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use outpost_protocol::message::{Assignment, RevisionRef, Target};
use sha2::{Digest, Sha256};

use crate::model::{Job, Playbook, Server};
use crate::store::Store;

/// The most playbook an assignment frame carries, leaving room for the rest of it.
const MAX_PLAYBOOK_BYTES: usize = outpost_protocol::codec::MAX_FRAME - 64 * 1024;

/// Playbook content by (path, hash): read and verified once, shared by every job of it.
#[derive(Default)]
pub(super) struct PlaybookCache {
    content: HashMap<(String, String), Arc<String>>,
}

impl PlaybookCache {
    /// Everything the agent needs for `job`; an error is a reason to fail the job.
    pub(super) async fn assignment(
        &mut self,
        store: &Store,
        job: &Job,
        server: &Server,
        dispatch_id: &str,
        time_limit: Duration,
    ) -> Result<Assignment, String> {
        let playbook = store
            .get_playbook(job.playbook_id)
            .await
            .map_err(|e| e.to_string())?;
        let _content = self.content(&playbook).await?;
        let (revision, playbook_path) = revision_for(&playbook)?;
        build(
            job,
            server,
            &playbook,
            revision,
            &playbook_path,
            dispatch_id,
            time_limit,
        )
    }

    async fn content(&mut self, playbook: &Playbook) -> Result<Arc<String>, String> {
        let key = (playbook.file_path.clone(), playbook.file_hash.clone());
        if let Some(c) = self.content.get(&key) {
            return Ok(c.clone());
        }
        let text = tokio::fs::read_to_string(&playbook.file_path)
            .await
            .map_err(|e| format!("cannot read playbook file {}: {e}", playbook.file_path))?;
        if text.len() > MAX_PLAYBOOK_BYTES {
            return Err(format!(
                "playbook file {} is {} bytes; the largest a job can carry is {MAX_PLAYBOOK_BYTES} bytes",
                playbook.file_path,
                text.len()
            ));
        }
        let actual = hex::encode(Sha256::digest(text.as_bytes()));
        if actual != playbook.file_hash {
            return Err(format!(
                "playbook file {} changed on disk: its SHA-256 is {actual}, the playbook record says {}; update the playbook",
                playbook.file_path, playbook.file_hash
            ));
        }
        let c = Arc::new(text);
        self.content.insert(key, c.clone());
        Ok(c)
    }
}

/// The revision a job of `playbook` runs, and the playbook's path in it.
///
/// Placeholder on the delivery branch: the projects branch records revisions and fills this in;
/// until the two are merged a job fails with this message rather than run without its tree.
fn revision_for(playbook: &Playbook) -> Result<(RevisionRef, String), String> {
    Err(format!(
        "project revisions are not wired yet: playbook '{}' has no revision to run",
        playbook.name
    ))
}

/// The assignment itself. The playbook's default variables (an admin's) are curated and may be
/// templates; the job's launch values override them and are data, unless an admin launched
/// them with templates allowed.
fn build(
    job: &Job,
    server: &Server,
    playbook: &Playbook,
    revision: RevisionRef,
    playbook_path: &str,
    dispatch_id: &str,
    time_limit: Duration,
) -> Result<Assignment, String> {
    let mut vars = playbook
        .variables
        .as_ref()
        .map(|v| v.0.clone())
        .unwrap_or_default();
    let mut launch = serde_json::Map::new();
    if let Some(extra) = &job.extra_vars {
        if job.extra_vars_templated {
            vars.extend(extra.0.clone());
        } else {
            launch = extra.0.clone();
        }
    }
    let options = match &job.run_options {
        Some(o) => serde_json::from_value(serde_json::Value::Object(o.0.clone()))
            .map_err(|e| format!("the job's run options are unreadable: {e}"))?,
        None => Default::default(),
    };
    Ok(Assignment {
        options,
        job: job.job_id.0,
        dispatch_id: dispatch_id.to_owned(),
        playbook_name: playbook.name.clone(),
        playbook_path: playbook_path.to_owned(),
        revision,
        target: Target {
            hostname: server.hostname.clone(),
            ip_address: server.ip_address.clone(),
            ssh_port: u16::try_from(server.ssh_port).unwrap_or(22),
            ssh_user: server.ssh_user.clone(),
            ssh_key_path: server.ssh_key_path.clone(),
            host_vars_json: server
                .host_vars
                .as_ref()
                .map(|h| serde_json::Value::Object(h.0.clone()).to_string())
                .unwrap_or_else(|| "{}".into()),
            groups: Vec::new(),
        },
        vars_json: serde_json::Value::Object(vars).to_string(),
        launch_vars_json: serde_json::Value::Object(launch).to_string(),
        time_limit_secs: u32::try_from(time_limit.as_secs()).unwrap_or(u32::MAX),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::samples;

    fn sample_revision() -> RevisionRef {
        RevisionRef {
            digest: "ab".repeat(32),
            size: 10240,
            commit: None,
            inventory_dir: String::new(),
            inline: None,
        }
    }

    #[test]
    fn job_vars_override_playbook_defaults_and_the_target_is_complete() {
        let job = samples::job(serde_json::json!({"version": "2.0", "extra": true}));
        let pb = samples::playbook(serde_json::json!({"version": "1.0", "user": "app"}));
        let mut server = samples::server(serde_json::json!({}));
        server.host_vars = serde_json::json!({"ansible_become": true})
            .as_object()
            .map(|o| sqlx::types::Json(o.clone()));
        let a = build(
            &job,
            &server,
            &pb,
            sample_revision(),
            "site.yml",
            "d-1",
            Duration::from_secs(90),
        )
        .unwrap();
        // Launch values are data, kept apart from the playbook's curated defaults…
        let vars: serde_json::Value = serde_json::from_str(&a.vars_json).unwrap();
        let launch: serde_json::Value = serde_json::from_str(&a.launch_vars_json).unwrap();
        assert_eq!(vars, serde_json::json!({"version": "1.0", "user": "app"}));
        assert_eq!(launch, serde_json::json!({"version": "2.0", "extra": true}));
        // …unless an admin launched them with templates allowed.
        let mut templated = job.clone();
        templated.extra_vars_templated = true;
        let a2 = build(
            &templated,
            &server,
            &pb,
            sample_revision(),
            "site.yml",
            "d-1",
            Duration::from_secs(90),
        )
        .unwrap();
        let vars: serde_json::Value = serde_json::from_str(&a2.vars_json).unwrap();
        assert_eq!(
            vars,
            serde_json::json!({"version": "2.0", "user": "app", "extra": true})
        );
        assert_eq!(a2.launch_vars_json, "{}");
        assert_eq!(
            (a.target.ssh_port, a.target.ssh_user.as_str()),
            (2222, "deploy")
        );
        assert_eq!(
            a.target.ssh_key_path.as_deref(),
            Some("/home/deploy/.ssh/id")
        );
        assert_eq!(a.target.host_vars_json, r#"{"ansible_become":true}"#);
        assert_eq!((a.time_limit_secs, a.dispatch_id.as_str()), (90, "d-1"));
        assert_eq!(a.playbook_path, "site.yml");
    }

    #[tokio::test]
    async fn a_playbook_changed_on_disk_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.yml");
        std::fs::write(&path, "- hosts: all\n").unwrap();
        let mut pb = samples::playbook(serde_json::json!({}));
        pb.file_path = path.display().to_string();
        pb.file_hash = hex::encode(Sha256::digest(b"- hosts: all\n"));
        let mut cache = PlaybookCache::default();
        assert_eq!(cache.content(&pb).await.unwrap().as_str(), "- hosts: all\n");
        std::fs::write(&path, "- hosts: all\n  become: true\n").unwrap();
        pb.file_hash = "b".repeat(64); // a new record version is read afresh…
        let err = cache.content(&pb).await.unwrap_err();
        assert!(err.contains("changed on disk"), "{err}"); // …and refused when it does not match
    }
}
