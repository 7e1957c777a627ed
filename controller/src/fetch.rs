//! Serving project revisions to agents: a fetch stream gets the revision's manifest, then its
//! chunks from the offset asked for, read from `<data_dir>/revisions/<digest>.tar` one chunk
//! at a time. Memory does not grow with the number of agents: at most [`MAX_STREAMS`] streams
//! are served at once (the others wait their turn), each holding one chunk and its frame, and a
//! revision's manifest is computed once and kept.

use std::collections::HashMap;
use std::io::SeekFrom;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use outpost_protocol::codec;
use outpost_protocol::fetch::{self, CHUNK_SIZE, MAX_FETCH_FRAME};
use outpost_protocol::message::{FetchDown, Manifest};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::{OnceCell, Semaphore};

use crate::metrics;
use crate::project::revision_path;

/// Fetch streams served at once; the rest wait for a turn. Each holds about two chunks.
pub const MAX_STREAMS: usize = 8;
/// Manifests kept (32 bytes per MiB of revision each).
const MAX_MANIFESTS: usize = 256;
/// A chunk the agent does not take within this long ends the stream (it resumes later), so a
/// stalled agent cannot hold a turn.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// The fetch streams of one controller: their turns and the manifests they share.
pub struct RevisionServer {
    turns: Arc<Semaphore>,
    manifests: Mutex<HashMap<String, Arc<OnceCell<Arc<Manifest>>>>>,
}

impl Default for RevisionServer {
    fn default() -> Self {
        RevisionServer {
            turns: Arc::new(Semaphore::new(MAX_STREAMS)),
            manifests: Mutex::default(),
        }
    }
}

impl RevisionServer {
    /// The manifest of `digest`, computed once however many agents ask at the same time. The
    /// file is checked against its name while it is read: a damaged revision is refused rather
    /// than sent.
    async fn manifest(&self, data_dir: &Path, digest: &str) -> Result<Arc<Manifest>, String> {
        let cell = {
            let mut map = self.manifests.lock().unwrap_or_else(|p| p.into_inner());
            if map.len() >= MAX_MANIFESTS && !map.contains_key(digest) {
                map.retain(|_, c| Arc::strong_count(c) > 1);
            }
            map.entry(digest.to_owned()).or_default().clone()
        };
        let path = revision_path(data_dir, digest);
        let digest = digest.to_owned();
        cell.get_or_try_init(|| async move {
            tokio::task::spawn_blocking(move || {
                let file = std::fs::File::open(&path).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        format!("no revision {digest} here")
                    } else {
                        format!("cannot read revision {digest}: {e}")
                    }
                })?;
                let (manifest, whole) = fetch::manifest_of(std::io::BufReader::new(file))
                    .map_err(|e| format!("cannot read revision {digest}: {e}"))?;
                if whole != digest {
                    tracing::error!(%digest, actual = %whole, path = %path.display(), "a stored revision does not match its name");
                    return Err(format!("the stored revision {digest} is damaged"));
                }
                Ok(Arc::new(manifest))
            })
            .await
            .map_err(|e| format!("cannot read the revision: {e}"))?
        })
        .await
        .cloned()
    }
}

/// Serves one fetch stream the agent opened with `Fetch { digest, offset }`.
pub async fn serve(
    server: &RevisionServer,
    data_dir: &Path,
    mut send: quinn::SendStream,
    digest: String,
    offset: u64,
) {
    // Checked before anything touches the filesystem: the digest names a file.
    if !fetch::valid_digest(&digest) {
        refuse(&mut send, format!("'{digest}' is not a revision digest")).await;
        return;
    }
    let Ok(_turn) = server.turns.clone().acquire_owned().await else {
        return;
    };
    let manifest = match server.manifest(data_dir, &digest).await {
        Ok(m) => m,
        Err(reason) => {
            refuse(&mut send, reason).await;
            return;
        }
    };
    let first = match fetch::first_chunk(&manifest, offset) {
        Ok(i) => i,
        Err(reason) => {
            refuse(&mut send, reason).await;
            return;
        }
    };
    if let Err(e) = stream(&mut send, data_dir, &digest, &manifest, first).await {
        // The agent went, or stopped reading: it resumes from what it verified.
        tracing::debug!(%digest, error = %e, "fetch stream ended early");
        return;
    }
    let _ = send.finish();
}

async fn refuse(send: &mut quinn::SendStream, reason: String) {
    tracing::info!(%reason, "revision fetch refused");
    let _ = codec::write_frame(send, &FetchDown::Refused { reason }, MAX_FETCH_FRAME).await;
    let _ = send.finish();
}

/// Sends the manifest, then chunks `first..` read from the file one at a time.
async fn stream(
    send: &mut quinn::SendStream,
    data_dir: &Path,
    digest: &str,
    manifest: &Manifest,
    first: u64,
) -> Result<(), String> {
    write(send, &FetchDown::Manifest(manifest.clone())).await?;
    let count = manifest.chunks.len() as u64;
    if first >= count {
        return Ok(());
    }
    let path = revision_path(data_dir, digest);
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| e.to_string())?;
    file.seek(SeekFrom::Start(first * u64::from(CHUNK_SIZE)))
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; CHUNK_SIZE as usize];
    for index in first..count {
        let n = read_full(&mut file, &mut buf)
            .await
            .map_err(|e| e.to_string())?;
        let index = u32::try_from(index).map_err(|e| e.to_string())?;
        // The buffer travels in the message and comes back: one chunk and one frame per
        // stream, never more.
        buf.truncate(n);
        let msg = FetchDown::Chunk { index, data: buf };
        write(send, &msg).await?;
        let FetchDown::Chunk { data, .. } = msg else {
            unreachable!("built above")
        };
        buf = data;
        buf.resize(CHUNK_SIZE as usize, 0);
        metrics::global().revision_bytes_served.add(n as u64);
    }
    Ok(())
}

async fn write(send: &mut quinn::SendStream, msg: &FetchDown) -> Result<(), String> {
    match tokio::time::timeout(
        WRITE_TIMEOUT,
        codec::write_frame(send, msg, MAX_FETCH_FRAME),
    )
    .await
    {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("the agent took no data for a minute".into()),
    }
}

async fn read_full(file: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..]).await? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[tokio::test]
    async fn a_manifest_is_made_once_and_a_damaged_revision_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("revisions")).unwrap();
        let data: Vec<u8> = (0..(CHUNK_SIZE as usize + 7)).map(|i| i as u8).collect();
        let digest = hex::encode(Sha256::digest(&data));
        std::fs::write(revision_path(dir.path(), &digest), &data).unwrap();
        let server = RevisionServer::default();
        let m = server.manifest(dir.path(), &digest).await.unwrap();
        assert_eq!((m.size, m.chunks.len()), (data.len() as u64, 2));
        // Kept: the file is not read again (here, even once it is gone).
        std::fs::remove_file(revision_path(dir.path(), &digest)).unwrap();
        let again = server.manifest(dir.path(), &digest).await.unwrap();
        assert!(Arc::ptr_eq(&m, &again));

        let wrong = "0".repeat(64);
        std::fs::write(revision_path(dir.path(), &wrong), &data).unwrap();
        let err = server.manifest(dir.path(), &wrong).await.unwrap_err();
        assert!(err.contains("damaged"), "{err}");
        let missing = "1".repeat(64);
        let err = server.manifest(dir.path(), &missing).await.unwrap_err();
        assert!(err.contains("no revision"), "{err}");
    }
}
