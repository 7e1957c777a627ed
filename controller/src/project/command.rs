//! Running a sync's tools (git, ansible-galaxy): arguments as separate words (never a shell),
//! no input, output kept to a bounded tail for the error message, killed with the sync.

use std::process::Stdio;

use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// The most output of a tool kept (its end: where the reason usually is).
const KEEP_BYTES: usize = 16 * 1024;

/// What a tool did.
pub struct Ran {
    pub success: bool,
    /// stderr then stdout, each cut to its last [`KEEP_BYTES`].
    pub output: String,
    /// stdout alone (cut the same way).
    pub stdout: String,
}

/// Runs `cmd` to its end. The child is killed if the future is dropped (a sync's time limit).
pub async fn run(mut cmd: Command) -> std::io::Result<Ran> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let out = child.stdout.take();
    let err = child.stderr.take();
    let (stdout, stderr, status) = tokio::join!(tail(out), tail(err), child.wait());
    let status = status?;
    let stdout = String::from_utf8_lossy(&stdout?).into_owned();
    let stderr = String::from_utf8_lossy(&stderr?).into_owned();
    let mut output = stderr.trim().to_owned();
    if !stdout.trim().is_empty() {
        if !output.is_empty() {
            output.push('\n');
        }
        output.push_str(stdout.trim());
    }
    if output.is_empty() {
        output = format!("it exited with {status} and said nothing");
    }
    Ok(Ran {
        success: status.success(),
        output,
        stdout,
    })
}

/// Reads a pipe to its end, keeping its last [`KEEP_BYTES`].
async fn tail(pipe: Option<impl tokio::io::AsyncRead + Unpin>) -> std::io::Result<Vec<u8>> {
    let Some(mut pipe) = pipe else {
        return Ok(Vec::new());
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    let mut cut = false;
    loop {
        let n = pipe.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * KEEP_BYTES {
            kept.drain(..kept.len() - KEEP_BYTES);
            cut = true;
        }
    }
    if kept.len() > KEEP_BYTES {
        kept.drain(..kept.len() - KEEP_BYTES);
        cut = true;
    }
    if cut {
        let mut marked = b"[...] ".to_vec();
        marked.extend_from_slice(&kept);
        return Ok(marked);
    }
    Ok(kept)
}
