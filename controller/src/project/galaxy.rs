//! A project's `collections/requirements.yml` and `roles/requirements.yml`, resolved at sync on
//! the controller with `ansible-galaxy … -p` into the tree itself, so the revision carries them
//! and bastions need no access to Galaxy or any other source (and nothing is pulled per run).

use std::path::Path;

use tokio::process::Command;

use super::command;
use super::ProjectError;

/// (kind, requirements file, directory installed into), relative to the tree's root: where
/// ansible-playbook finds them when it runs from the root (`collections/ansible_collections/…`,
/// `roles/<name>`).
const REQUIREMENTS: &[(&str, &str, &str)] = &[
    ("collection", "collections/requirements.yml", "collections"),
    ("role", "roles/requirements.yml", "roles"),
];

/// Installs what the tree's requirements files ask for, if it has any.
pub async fn install(tree: &Path) -> Result<(), ProjectError> {
    for &(kind, file, dest) in REQUIREMENTS {
        // A file of the tree (a link was checked to stay inside it when the tree was made).
        match std::fs::metadata(tree.join(file)) {
            Ok(m) if m.is_file() => {}
            _ => continue,
        }
        let mut cmd = Command::new("ansible-galaxy");
        cmd.arg(kind)
            .arg("install")
            .arg("-r")
            .arg(file)
            .arg("-p")
            .arg(dest)
            .current_dir(tree)
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_FORCE_COLOR", "0");
        let ran = command::run(cmd)
            .await
            .map_err(|source| ProjectError::Missing {
                program: "ansible-galaxy",
                source,
            })?;
        if !ran.success {
            return Err(ProjectError::Galaxy {
                kind,
                file,
                output: ran.output,
            });
        }
    }
    Ok(())
}
