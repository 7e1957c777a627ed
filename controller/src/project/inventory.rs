//! A project's inventory file as an inventory source: at every sync, `ansible-inventory --list`
//! reads it inside the synced tree (ranges, groups of groups, `group_vars/`/`host_vars/`
//! directories, plugins: exactly as ansible reads it), and its hosts become server records.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use outpost_api::inventory::{parse_list, resolve_system, to_server, MAX_LIST_BYTES};
use outpost_api::NewServerRequest;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use super::ProjectError;

/// How long ansible may take to list an inventory (plugins may ask a cloud API).
const LIST_TIME_LIMIT: Duration = Duration::from_secs(120);

/// The servers `inventory` (a checked relative path of `tree`) describes, as ansible reads it.
pub async fn read(tree: &Path, inventory: &str) -> Result<Vec<NewServerRequest>, ProjectError> {
    let mut cmd = Command::new("ansible-inventory");
    cmd.arg("-i")
        .arg(inventory)
        .arg("--list")
        .current_dir(tree)
        // An inventory ansible cannot parse is an error, not an empty listing.
        .env("ANSIBLE_INVENTORY_UNPARSED_FAILED", "True")
        .env("ANSIBLE_NOCOLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| ProjectError::Missing {
        program: "ansible-inventory",
        source,
    })?;
    let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
    let listed = tokio::time::timeout(LIST_TIME_LIMIT, async {
        // The listing is read whole, but never past the reader's own limit (+1 to see it).
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let read_out = async {
            if let Some(o) = out.as_mut() {
                o.take(MAX_LIST_BYTES as u64 + 1)
                    .read_to_end(&mut stdout)
                    .await?;
            }
            Ok::<_, std::io::Error>(())
        };
        let read_err = async {
            if let Some(e) = err.as_mut() {
                e.take(16 * 1024).read_to_end(&mut stderr).await?;
            }
            Ok::<_, std::io::Error>(())
        };
        let (a, b) = tokio::join!(read_out, read_err);
        a.and(b)?;
        let status = child.wait().await?;
        Ok::<_, std::io::Error>((status, stdout, stderr))
    })
    .await;
    let (status, stdout, stderr) = match listed {
        Ok(r) => r.map_err(ProjectError::io(format!(
            "ansible-inventory -i {inventory}"
        )))?,
        Err(_) => {
            return Err(ProjectError::Refused(format!(
                "ansible-inventory -i {inventory} took longer than {LIST_TIME_LIMIT:?}"
            )))
        }
    };
    if !status.success() {
        return Err(ProjectError::Refused(format!(
            "ansible-inventory -i {inventory} failed: {}",
            String::from_utf8_lossy(&stderr).trim()
        )));
    }
    let hosts = parse_list(&stdout)
        .map_err(|e| ProjectError::Refused(format!("the inventory {inventory}: {e}")))?;
    // Names without an address are resolved here, as the CLI's import does; getaddrinfo
    // blocks, so off the async workers.
    tokio::task::spawn_blocking(move || {
        hosts
            .iter()
            .map(|h| to_server(h, resolve_system))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| ProjectError::Refused(format!("reading the inventory stopped: {e}")))?
    .map_err(|e| ProjectError::Refused(format!("the inventory {inventory}: {e}")))
}
