//! Archives: job output and audit records written to cold storage before they leave the
//! database, verified, recorded, and read back from there.
//!
//! - [`format`]: the object's layout (zstd frames of JSON lines with a frame index), pure;
//! - [`sink`]: where objects go (a directory or an S3-compatible bucket, `object_store`);
//! - [`jobs`]: a job's output archived ([`jobs::archive_expired`]), its rows removed once the
//!   archive is verified and recorded ([`jobs::remove_archived`]), and its log read back a page
//!   at a time;
//! - [`audit`]: audit records exported by id range ([`audit::export_audit_range`]).

pub mod audit;
pub mod format;
pub mod jobs;
pub mod sink;

use thiserror::Error;

pub use sink::ArchiveSettings;

#[derive(Debug, Error)]
pub enum ArchiveError {
    #[error("archive settings: {0}")]
    Settings(String),
    #[error("cannot {action} archive object {key}: {message}")]
    Object {
        action: &'static str,
        key: String,
        message: String,
    },
    #[error("archive object {key}: {source}")]
    Format {
        key: String,
        source: format::FormatError,
    },
    #[error("cannot encode record {0} for the archive")]
    Encode(i64),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl ArchiveError {
    fn object(action: &'static str, key: &str, e: object_store::Error) -> ArchiveError {
        ArchiveError::Object {
            action,
            key: key.to_owned(),
            message: e.to_string(),
        }
    }

    fn format(key: &str, source: format::FormatError) -> ArchiveError {
        ArchiveError::Format {
            key: key.to_owned(),
            source,
        }
    }
}

/// The archive of one controller: its sink, shared by the retention task and the readers.
#[derive(Debug, Clone)]
pub struct Archive {
    sink: sink::Sink,
}

impl Archive {
    /// Checks the settings (no I/O: the store is opened when first used).
    pub fn new(settings: &ArchiveSettings) -> Result<Archive, ArchiveError> {
        Ok(Archive {
            sink: sink::Sink::new(settings)?,
        })
    }

    pub fn url(&self) -> &str {
        self.sink.url()
    }

    /// Writes an object, reads it back whole and checks it holds `records` records with this
    /// SHA-256: an archive is trusted only once it has been read from where it was put.
    async fn put_verified(
        &self,
        key: &str,
        object: Vec<u8>,
        index: &format::Index,
    ) -> Result<(), ArchiveError> {
        let len = object.len();
        self.sink.put(key, object).await?;
        let back = self.sink.get(key).await?;
        if back.len() != len {
            return Err(ArchiveError::format(
                key,
                format::FormatError::Corrupt(format!(
                    "{} bytes read back, {len} written",
                    back.len()
                )),
            ));
        }
        format::verify(&back, index.records, &index.sha256)
            .map_err(|e| ArchiveError::format(key, e))?;
        Ok(())
    }

    /// Reads and checks an object's index, knowing its size from the database.
    async fn index(&self, key: &str, size: u64) -> Result<format::Index, ArchiveError> {
        // One read of the tail usually holds the trailer and the whole index (1,000 frames,
        // a million lines, take 36 KB).
        let tail_len = size.min(64 << 10);
        let tail = self.sink.get_range(key, size - tail_len..size).await?;
        let t = tail.len();
        if t < format::TRAILER_LEN {
            return Err(ArchiveError::format(
                key,
                format::FormatError::NotArchive("too short"),
            ));
        }
        let footer_len = format::footer_len(&tail[t - format::TRAILER_LEN..], size)
            .map_err(|e| ArchiveError::format(key, e))?;
        let needed = footer_len + format::TRAILER_LEN;
        let footer = if needed <= t {
            tail[t - needed..t - format::TRAILER_LEN].to_vec()
        } else {
            let end = size - format::TRAILER_LEN as u64;
            self.sink
                .get_range(key, end - footer_len as u64..end)
                .await?
        };
        format::parse_footer(&footer, size).map_err(|e| ArchiveError::format(key, e))
    }

    /// Frame `i` of an object, decompressed into its lines.
    async fn frame(
        &self,
        key: &str,
        i: usize,
        f: &format::FrameEntry,
    ) -> Result<Vec<String>, ArchiveError> {
        let bytes = self
            .sink
            .get_range(key, f.offset..f.offset + u64::from(f.len))
            .await?;
        format::decode_frame(i, f, &bytes).map_err(|e| ArchiveError::format(key, e))
    }
}
