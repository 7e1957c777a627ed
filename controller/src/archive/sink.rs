//! Where archive objects are kept: an object store chosen by the `archive_url` setting, a
//! directory (`file:///var/lib/outpost/archive`) or an S3-compatible bucket
//! (`s3://bucket/prefix`), both through the `object_store` crate. Keys are relative to the URL
//! (`jobs/<job uuid>.olog`), so what the database records does not name the backend.
//!
//! The S3 secret key is read when the store is first used, from the environment
//! (`OUTPOST_ARCHIVE_S3_SECRET_ACCESS_KEY`) or a file (`archive_s3_secret_access_key_file`):
//! never a flag (argv is public) and never logged.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, PutPayload, RetryConfig};
use tokio::sync::OnceCell;

use super::ArchiveError;

/// The environment variable that holds the S3 secret key.
pub const SECRET_ENV: &str = "OUTPOST_ARCHIVE_S3_SECRET_ACCESS_KEY";

/// The archive settings, as [`crate::config::Settings`] holds them (no secret among them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSettings {
    /// `file:///dir` or `s3://bucket[/prefix]`.
    pub url: String,
    /// An S3-compatible server's URL (`http://127.0.0.1:9000`); unset: AWS.
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    pub s3_access_key_id: Option<String>,
    /// A file holding the secret key (first line), when the environment does not.
    pub s3_secret_access_key_file: Option<PathBuf>,
}

impl ArchiveSettings {
    /// A directory archive.
    pub fn directory(dir: &std::path::Path) -> ArchiveSettings {
        ArchiveSettings {
            url: format!("file://{}", dir.display()),
            s3_endpoint: None,
            s3_region: None,
            s3_access_key_id: None,
            s3_secret_access_key_file: None,
        }
    }
}

/// What an `archive_url` names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Directory(PathBuf),
    Bucket { bucket: String, prefix: String },
}

fn target(url: &str) -> Result<Target, ArchiveError> {
    let bad = |m: &str| ArchiveError::Settings(format!("archive_url {url:?}: {m}"));
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(bad(
                "a file:// URL needs an absolute path (file:///var/lib/...)",
            ));
        }
        return Ok(Target::Directory(PathBuf::from(path)));
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("no bucket (s3://bucket/prefix)"));
        }
        return Ok(Target::Bucket {
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
        });
    }
    Err(bad("must start with file:// or s3://"))
}

/// The object store behind the archive; opened on first use (a directory that cannot be made
/// yet, or a bucket not reachable yet, fails the archive pass that needs it, not start-up).
#[derive(Clone)]
pub struct Sink {
    settings: Arc<ArchiveSettings>,
    target: Target,
    store: Arc<OnceCell<Arc<dyn ObjectStore>>>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("url", &self.settings.url)
            .finish()
    }
}

impl Sink {
    /// Checks the URL; no I/O.
    pub fn new(settings: &ArchiveSettings) -> Result<Sink, ArchiveError> {
        Ok(Sink {
            target: target(&settings.url)?,
            settings: Arc::new(settings.clone()),
            store: Arc::new(OnceCell::new()),
        })
    }

    pub fn url(&self) -> &str {
        &self.settings.url
    }

    async fn open(&self) -> Result<&Arc<dyn ObjectStore>, ArchiveError> {
        self.store
            .get_or_try_init(|| async {
                let s = &self.settings;
                let store: Arc<dyn ObjectStore> = match &self.target {
                    Target::Directory(dir) => {
                        std::fs::create_dir_all(dir).map_err(|e| {
                            ArchiveError::Settings(format!(
                                "cannot create the archive directory {}: {e}",
                                dir.display()
                            ))
                        })?;
                        Arc::new(
                            LocalFileSystem::new_with_prefix(dir)
                                .map_err(|e| ArchiveError::object("open", s.url.as_str(), e))?,
                        )
                    }
                    Target::Bucket { bucket, .. } => {
                        let mut b = AmazonS3Builder::new()
                            .with_bucket_name(bucket)
                            .with_region(s.s3_region.as_deref().unwrap_or("us-east-1"))
                            // A stopped server fails the pass within seconds, not minutes:
                            // the next pass tries again.
                            .with_retry(RetryConfig {
                                max_retries: 2,
                                retry_timeout: Duration::from_secs(15),
                                ..RetryConfig::default()
                            })
                            .with_client_options(
                                ClientOptions::new()
                                    .with_connect_timeout(Duration::from_secs(5))
                                    .with_timeout(Duration::from_secs(120)),
                            );
                        if let Some(e) = &s.s3_endpoint {
                            b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
                        }
                        if let Some(k) = &s.s3_access_key_id {
                            b = b.with_access_key_id(k);
                        }
                        if let Some(secret) = secret(s)? {
                            b = b.with_secret_access_key(secret);
                        }
                        Arc::new(
                            b.build()
                                .map_err(|e| ArchiveError::object("open", s.url.as_str(), e))?,
                        )
                    }
                };
                Ok(store)
            })
            .await
    }

    fn path(&self, key: &str) -> ObjectPath {
        match &self.target {
            Target::Bucket { prefix, .. } if !prefix.is_empty() => {
                ObjectPath::from(format!("{prefix}/{key}"))
            }
            _ => ObjectPath::from(key),
        }
    }

    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), ArchiveError> {
        let store = self.open().await?;
        store
            .put(&self.path(key), PutPayload::from(bytes))
            .await
            .map_err(|e| ArchiveError::object("write", key, e))?;
        Ok(())
    }

    pub async fn get(&self, key: &str) -> Result<Vec<u8>, ArchiveError> {
        let store = self.open().await?;
        let got = store
            .get(&self.path(key))
            .await
            .map_err(|e| ArchiveError::object("read", key, e))?;
        let bytes = got
            .bytes()
            .await
            .map_err(|e| ArchiveError::object("read", key, e))?;
        Ok(bytes.to_vec())
    }

    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>, ArchiveError> {
        let store = self.open().await?;
        let bytes = store
            .get_range(&self.path(key), range)
            .await
            .map_err(|e| ArchiveError::object("read", key, e))?;
        Ok(bytes.to_vec())
    }
}

/// The S3 secret key: the environment first, then the file.
fn secret(s: &ArchiveSettings) -> Result<Option<String>, ArchiveError> {
    if let Ok(v) = std::env::var(SECRET_ENV) {
        if !v.is_empty() {
            return Ok(Some(v));
        }
    }
    match &s.s3_secret_access_key_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ArchiveError::Settings(format!(
                    "cannot read archive_s3_secret_access_key_file {}: {e}",
                    path.display()
                ))
            })?;
            Ok(Some(text.lines().next().unwrap_or("").trim().to_owned()))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_urls_name_a_directory_or_a_bucket() {
        assert_eq!(
            target("file:///var/lib/outpost/archive").unwrap(),
            Target::Directory("/var/lib/outpost/archive".into())
        );
        assert_eq!(
            target("s3://logs/outpost/prod/").unwrap(),
            Target::Bucket {
                bucket: "logs".into(),
                prefix: "outpost/prod".into()
            }
        );
        assert_eq!(
            target("s3://logs").unwrap(),
            Target::Bucket {
                bucket: "logs".into(),
                prefix: String::new()
            }
        );
        for bad in [
            "file://relative/dir",
            "s3:///x",
            "/var/lib/outpost",
            "gs://b",
        ] {
            assert!(target(bad).is_err(), "{bad}");
        }
    }
}
