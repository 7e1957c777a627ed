//! Fetching a revision over the agent's own session: one fetch stream per attempt, on whatever
//! connection is up, resumed from the part file's length after a cut, until the part holds the
//! whole revision, verified. The rules (which offset, which chunk is good, when to give up) are
//! the protocol's [`Fetch`]; this only moves bytes between it, the network and the part file.

use std::io::SeekFrom;
use std::sync::Arc;
use std::time::Duration;

use outpost_protocol::codec;
use outpost_protocol::fetch::{Fetch, Verdict, MAX_FETCH_FRAME};
use outpost_protocol::message::{FetchDown, RevisionRef};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::revisions::{CacheError, Lease, RevisionCache};

/// The agent's live connection to a controller, when it has one.
pub type Link = watch::Receiver<Option<quinn::Connection>>;

/// Silence on a fetch stream for this long ends the attempt (a new one resumes).
const FRAME_TIMEOUT: Duration = Duration::from_secs(60);
/// Bounds of the pause between attempts that made no progress.
const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Where jobs get their revisions' trees: the cache, filled over the session when needed.
pub struct Revisions {
    pub cache: Arc<RevisionCache>,
    pub link: Link,
}

impl Revisions {
    /// The tree of `rev`, fetched first if this agent does not have it.
    pub async fn tree(&self, rev: &RevisionRef) -> Result<Lease, CacheError> {
        let link = self.link.clone();
        self.cache
            .acquire(rev, move |fetch, part| fetch_over(link, fetch, part))
            .await
    }
}

/// Why one attempt (one stream) ended without the revision.
enum Attempt {
    /// The fetch cannot go on (the protocol's verdict): the job fails.
    Fatal(CacheError),
    /// The stream or connection went: try again, from what is verified.
    Cut(String),
}

/// Fetches into `part` (holding what `fetch` has verified so far) until the revision is whole.
pub async fn fetch_over(
    mut link: Link,
    mut fetch: Fetch,
    part: std::fs::File,
) -> Result<(), CacheError> {
    let mut part = tokio::fs::File::from_std(part);
    let digest = fetch.digest().to_owned();
    let disk = |e: std::io::Error| CacheError::Io {
        path: format!("{digest}.part"),
        source: e,
    };
    let mut pause = RETRY_MIN;
    loop {
        let Some(conn) = connection(&mut link).await else {
            return Err(CacheError::Transfer {
                digest: digest.clone(),
                why: "the agent is stopping".into(),
            });
        };
        let before = fetch.offset();
        match attempt(&conn, &mut fetch, &mut part).await {
            Ok(Verdict::Done) => {
                part.flush().await.map_err(disk)?;
                tracing::info!(%digest, bytes = fetch.offset(), "revision fetched");
                return Ok(());
            }
            Ok(Verdict::Retry) => {
                tracing::warn!(%digest, offset = fetch.offset(), refusals = fetch.refusals(), "a chunk failed its SHA-256; asking for it again");
            }
            Ok(Verdict::StartOver) => {
                tracing::warn!(%digest, refusals = fetch.refusals(), "the bytes held are not the revision; fetching it again from the start");
                part.set_len(0).await.map_err(disk)?;
                part.seek(SeekFrom::Start(0)).await.map_err(disk)?;
            }
            Ok(Verdict::Continue) => {}
            Err(Attempt::Fatal(e)) => return Err(e),
            Err(Attempt::Cut(why)) => {
                if fetch.offset() > before {
                    pause = RETRY_MIN;
                }
                tracing::info!(%digest, have = fetch.offset(), %why, retry_in = ?pause, "revision fetch interrupted; resuming");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RETRY_MAX);
            }
        }
    }
}

/// The live connection, waiting for one while there is none.
async fn connection(link: &mut Link) -> Option<quinn::Connection> {
    loop {
        let current = link
            .borrow_and_update()
            .clone()
            .filter(|c| c.close_reason().is_none());
        if current.is_some() {
            return current;
        }
        link.changed().await.ok()?;
    }
}

/// One fetch stream: asks from what is verified, appends each chunk that checks out, and
/// returns at the first verdict that is not "go on".
async fn attempt(
    conn: &quinn::Connection,
    fetch: &mut Fetch,
    part: &mut tokio::fs::File,
) -> Result<Verdict, Attempt> {
    let cut = |e: &dyn std::fmt::Display| Attempt::Cut(e.to_string());
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| cut(&e))?;
    codec::write_frame(&mut send, &fetch.request(), codec::MAX_FRAME)
        .await
        .map_err(|e| cut(&e))?;
    // Nothing more to say on this stream.
    let _ = send.finish();
    loop {
        let msg = match tokio::time::timeout(
            FRAME_TIMEOUT,
            codec::read_frame::<_, FetchDown>(&mut recv, MAX_FETCH_FRAME),
        )
        .await
        {
            Err(_) => return Err(cut(&"the controller sent nothing for a minute")),
            Ok(Err(e)) => return Err(cut(&e)),
            Ok(Ok(None)) => return Err(cut(&"the controller ended the stream early")),
            Ok(Ok(Some(m))) => m,
        };
        let verdict = fetch.receive(&msg).map_err(|e| Attempt::Fatal(e.into()))?;
        if let (FetchDown::Chunk { data, .. }, Verdict::Continue | Verdict::Done) = (&msg, verdict)
        {
            part.write_all(data).await.map_err(|e| {
                Attempt::Fatal(CacheError::Io {
                    path: "revision part file".into(),
                    source: e,
                })
            })?;
        }
        if verdict != Verdict::Continue {
            return Ok(verdict);
        }
    }
}
