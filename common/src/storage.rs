//! Where checkpoints and savepoints live: a local directory (the default), `s3://bucket/prefix` or
//! `gs://bucket/prefix`.
//!
//! A [`Storage`] is a location that names a directory-like prefix; files are addressed by names relative
//! to it (`chk-3/1-0.snapshot`). A local directory is worked with through the file system directly (atomic
//! writes with fsync of the file and its directory, directory renames, `remove_dir_all`); an object store through the `object_store`
//! crate, configured from the environment as its builders read it: `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT` (an S3-compatible server), `AWS_ALLOW_HTTP`;
//! `GOOGLE_SERVICE_ACCOUNT` (a key file) or `GOOGLE_SERVICE_ACCOUNT_KEY`, else the instance's credentials.
//!
//! Requests to an object store retry a few times with backoff and then fail (a bounded wait, see
//! [`STORAGE_RETRY_TIMEOUT`]): a checkpoint whose storage is down is declined, not left hanging.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::{ClientConfigKey, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart};

use crate::durable::{create_dir_all_durably, rename_durably, sync_dir};

/// How long one request to an object store may be retried before it fails.
pub const STORAGE_RETRY_TIMEOUT: Duration = Duration::from_secs(10);
/// Retries of one request to an object store.
const STORAGE_MAX_RETRIES: usize = 4;
/// Connecting to an object store gives up after this long.
const STORAGE_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// One request (a part of an upload included) gives up after this long.
const STORAGE_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Files up to this size go up in one request; larger ones as a multipart upload of parts this size.
const UPLOAD_PART_BYTES: usize = 8 * 1024 * 1024;
/// Parts of one multipart upload in flight at once.
const UPLOAD_CONCURRENCY: usize = 4;

/// A storage operation failed; the message names the location.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StorageError {
    /// What failed, and where.
    pub message: String,
    /// Whether the file or object is known to be absent. Anything else (a refused connection, a timeout, a
    /// server error, a local I/O error) says nothing about what is stored: the caller may try again.
    pub not_found: bool,
}

impl StorageError {
    /// A failure that says nothing of whether the file is there.
    pub fn new(message: impl Into<String>) -> Self {
        StorageError { message: message.into(), not_found: false }
    }
}

/// Whether an error of the layer below says the file is absent.
trait Absence: std::fmt::Display {
    fn is_not_found(&self) -> bool;
}

impl Absence for std::io::Error {
    fn is_not_found(&self) -> bool {
        self.kind() == std::io::ErrorKind::NotFound
    }
}

impl Absence for object_store::Error {
    fn is_not_found(&self) -> bool {
        matches!(self, object_store::Error::NotFound { .. })
    }
}

/// A checkpoint location: a local directory or a prefix in an object store.
#[derive(Clone)]
pub enum Storage {
    /// An absolute directory.
    Local(PathBuf),
    /// A prefix in a bucket.
    Object {
        /// The bucket's client.
        store: Arc<dyn ObjectStore>,
        /// `s3://bucket` or `gs://bucket`.
        bucket_url: String,
        /// The location within the bucket.
        prefix: ObjectPath,
    },
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.location())
    }
}

/// Whether `location` names an object store rather than a local directory.
pub fn is_object_store_url(location: &str) -> bool {
    location.starts_with("s3://") || location.starts_with("s3a://") || location.starts_with("gs://")
}

impl Storage {
    /// Opens a location: `s3://bucket/prefix`, `gs://bucket/prefix`, `file:///dir`, or a directory path
    /// (made absolute). Object stores take their endpoint and credentials from the environment.
    pub fn open(location: &str) -> Result<Self, StorageError> {
        let location = location.trim();
        if location.is_empty() {
            return Err(StorageError::new("an empty storage location"));
        }
        if let Some(path) = location.strip_prefix("file://") {
            return Self::local(Path::new(path));
        }
        if !location.contains("://") {
            return Self::local(Path::new(location));
        }
        let url =
            url::Url::parse(location).map_err(|e| StorageError::new(format!("'{location}' is not a URL: {e}")))?;
        let bucket = url.host_str().filter(|b| !b.is_empty()).ok_or_else(|| {
            StorageError::new(format!("'{location}' names no bucket (expected {}://bucket/prefix)", url.scheme()))
        })?;
        let bucket_url = format!("{}://{bucket}", url.scheme());
        let prefix = ObjectPath::from_url_path(url.path())
            .map_err(|e| StorageError::new(format!("'{location}' has an invalid path: {e}")))?;
        let retry = RetryConfig {
            max_retries: STORAGE_MAX_RETRIES,
            retry_timeout: STORAGE_RETRY_TIMEOUT,
            ..RetryConfig::default()
        };
        // Timeouts as configuration keys: replacing the builder's client options would drop what it read from
        // the environment (AWS_ALLOW_HTTP among them).
        let connect_timeout = format!("{}s", STORAGE_CONNECT_TIMEOUT.as_secs());
        let request_timeout = format!("{}s", STORAGE_REQUEST_TIMEOUT.as_secs());
        let store: Arc<dyn ObjectStore> = match url.scheme() {
            "s3" | "s3a" => Arc::new(
                AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(retry)
                    .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout), &connect_timeout)
                    .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), &request_timeout)
                    .build()
                    .map_err(|e| StorageError::new(format!("cannot configure S3 for '{location}': {e}")))?,
            ),
            "gs" => Arc::new(
                GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(retry)
                    .with_config(GoogleConfigKey::Client(ClientConfigKey::ConnectTimeout), &connect_timeout)
                    .with_config(GoogleConfigKey::Client(ClientConfigKey::Timeout), &request_timeout)
                    .build()
                    .map_err(|e| StorageError::new(format!("cannot configure GCS for '{location}': {e}")))?,
            ),
            other => {
                return Err(StorageError::new(format!(
                    "'{location}': unsupported scheme '{other}' (use a directory, file://, s3:// or gs://)"
                )))
            }
        };
        Ok(Storage::Object { store, bucket_url, prefix })
    }

    fn local(path: &Path) -> Result<Self, StorageError> {
        let absolute = std::path::absolute(path)
            .map_err(|e| StorageError::new(format!("cannot resolve the directory {}: {e}", path.display())))?;
        Ok(Storage::Local(absolute))
    }

    /// The location as a string that [`Storage::open`] opens again (what the metadata and the API show).
    pub fn location(&self) -> String {
        match self {
            Storage::Local(dir) => dir.display().to_string(),
            Storage::Object { bucket_url, prefix, .. } if prefix.as_ref().is_empty() => bucket_url.clone(),
            Storage::Object { bucket_url, prefix, .. } => format!("{bucket_url}/{prefix}"),
        }
    }

    /// The local directory, when this is one.
    pub fn local_dir(&self) -> Option<&Path> {
        match self {
            Storage::Local(dir) => Some(dir),
            Storage::Object { .. } => None,
        }
    }

    /// The location `name` under this one (`name` may hold `/`-separated parts).
    pub fn child(&self, name: &str) -> Storage {
        match self {
            Storage::Local(dir) => Storage::Local(dir.join(name)),
            Storage::Object { store, bucket_url, prefix } => Storage::Object {
                store: store.clone(),
                bucket_url: bucket_url.clone(),
                prefix: name.split('/').filter(|p| !p.is_empty()).fold(prefix.clone(), |p, part| p.join(part)),
            },
        }
    }

    fn object_path(prefix: &ObjectPath, name: &str) -> ObjectPath {
        name.split('/').filter(|p| !p.is_empty()).fold(prefix.clone(), |p, part| p.join(part))
    }

    /// Where `name` is, for messages.
    pub fn describe(&self, name: &str) -> String {
        match self {
            Storage::Local(dir) => dir.join(name).display().to_string(),
            Storage::Object { bucket_url, prefix, .. } => format!("{bucket_url}/{}", Self::object_path(prefix, name)),
        }
    }

    fn failed(&self, what: &str, name: &str, e: impl Absence) -> StorageError {
        StorageError { message: format!("cannot {what} {}: {e}", self.describe(name)), not_found: e.is_not_found() }
    }

    /// Checks that this location can be used: writes a small probe object (`.sluice-probe-<uuid>`), reads it
    /// back, compares, and deletes it. Err says which step failed and why.
    pub async fn probe(&self) -> Result<(), StorageError> {
        let name = format!(".sluice-probe-{}", uuid::Uuid::new_v4().simple());
        let bytes = format!("sluice storage probe {name}").into_bytes();
        self.put(&name, bytes.clone()).await?;
        let read = self.get(&name).await;
        let deleted = self.delete(&name).await;
        if read? != bytes {
            return Err(StorageError::new(format!("{} read back other bytes than were written", self.describe(&name))));
        }
        deleted
    }

    /// Where this location's client takes its credentials from, as the environment configures it (what
    /// `object_store`'s builders read, in their order).
    pub fn credentials_source(&self) -> &'static str {
        let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
        match self {
            Storage::Local(_) => "the local file system (this process's permissions)",
            Storage::Object { bucket_url, .. } if bucket_url.starts_with("gs://") => {
                if set("GOOGLE_SERVICE_ACCOUNT")
                    || set("GOOGLE_SERVICE_ACCOUNT_PATH")
                    || set("GOOGLE_SERVICE_ACCOUNT_KEY")
                {
                    "a service account key (GOOGLE_SERVICE_ACCOUNT*)"
                } else if set("GOOGLE_APPLICATION_CREDENTIALS") {
                    "application default credentials (GOOGLE_APPLICATION_CREDENTIALS)"
                } else {
                    "the metadata server (GKE Workload Identity, or the node's service account)"
                }
            }
            Storage::Object { .. } => {
                if set("AWS_ACCESS_KEY_ID") {
                    "static keys (AWS_ACCESS_KEY_ID)"
                } else if set("AWS_WEB_IDENTITY_TOKEN_FILE") {
                    "web identity (IRSA: AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN)"
                } else if set("AWS_CONTAINER_CREDENTIALS_FULL_URI") || set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
                    "container credentials (EKS Pod Identity or ECS: AWS_CONTAINER_CREDENTIALS_*)"
                } else {
                    "the instance metadata service (IMDS)"
                }
            }
        }
    }

    /// Writes `bytes` as `name`, atomically: a reader sees all of it or nothing (a local file is written
    /// under a temporary name, synced, then renamed).
    pub async fn put(&self, name: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        match self {
            Storage::Local(dir) => {
                let path = dir.join(name);
                let result = tokio::task::spawn_blocking(move || write_local_atomically(&path, &bytes)).await;
                flatten(result).map_err(|e| self.failed("write", name, e))
            }
            Storage::Object { store, prefix, .. } => store
                .put(&Self::object_path(prefix, name), PutPayload::from(bytes))
                .await
                .map(|_| ())
                .map_err(|e| self.failed("write", name, e)),
        }
    }

    /// The whole of `name`.
    pub async fn get(&self, name: &str) -> Result<Vec<u8>, StorageError> {
        match self {
            Storage::Local(dir) => tokio::fs::read(dir.join(name)).await.map_err(|e| self.failed("read", name, e)),
            Storage::Object { store, prefix, .. } => {
                let result =
                    store.get(&Self::object_path(prefix, name)).await.map_err(|e| self.failed("read", name, e))?;
                let bytes = result.bytes().await.map_err(|e| self.failed("read", name, e))?;
                Ok(bytes.to_vec())
            }
        }
    }

    /// Whether `name` exists (and is a file).
    pub async fn exists(&self, name: &str) -> Result<bool, StorageError> {
        match self {
            // Only "not found" proves absence; another error (EIO, EACCES, a stale NFS handle) says nothing.
            Storage::Local(dir) => match tokio::fs::metadata(dir.join(name)).await {
                Ok(metadata) => Ok(metadata.is_file()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(self.failed("look up", name, e)),
            },
            Storage::Object { store, prefix, .. } => match store.head(&Self::object_path(prefix, name)).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(self.failed("look up", name, e)),
            },
        }
    }

    /// Stores the local file `source` as `name` (a copy; large files go up in parts).
    pub async fn upload(&self, name: &str, source: &Path) -> Result<u64, StorageError> {
        match self {
            Storage::Local(dir) => {
                let (source, target) = (source.to_path_buf(), dir.join(name));
                let result = tokio::task::spawn_blocking(move || copy_local_atomically(&source, &target)).await;
                flatten(result).map_err(|e| self.failed("write", name, e))
            }
            Storage::Object { store, prefix, .. } => {
                use tokio::io::AsyncReadExt;
                let path = Self::object_path(prefix, name);
                let mut file = tokio::fs::File::open(source).await.map_err(|e| self.failed("upload to", name, e))?;
                let length = file.metadata().await.map_err(|e| self.failed("upload to", name, e))?.len();
                if length <= UPLOAD_PART_BYTES as u64 {
                    let mut bytes = Vec::with_capacity(length as usize);
                    file.read_to_end(&mut bytes).await.map_err(|e| self.failed("upload to", name, e))?;
                    store.put(&path, PutPayload::from(bytes)).await.map_err(|e| self.failed("upload to", name, e))?;
                    return Ok(length);
                }
                let upload = store.put_multipart(&path).await.map_err(|e| self.failed("upload to", name, e))?;
                let mut writer = WriteMultipart::new_with_chunk_size(upload, UPLOAD_PART_BYTES);
                let mut buffer = vec![0u8; UPLOAD_PART_BYTES];
                loop {
                    let n = match file.read(&mut buffer).await {
                        Ok(n) => n,
                        Err(e) => {
                            let _ = writer.abort().await;
                            return Err(self.failed("upload to", name, e));
                        }
                    };
                    if n == 0 {
                        break;
                    }
                    if let Err(e) = writer.wait_for_capacity(UPLOAD_CONCURRENCY).await {
                        return Err(self.failed("upload to", name, e));
                    }
                    writer.write(&buffer[..n]);
                }
                writer.finish().await.map_err(|e| self.failed("upload to", name, e))?;
                Ok(length)
            }
        }
    }

    /// `name` as a local file: the file itself for a local directory, else a download into `spool` that is
    /// deleted when the returned value is dropped.
    pub async fn fetch(&self, name: &str, spool: &Path) -> Result<LocalCopy, StorageError> {
        match self {
            Storage::Local(dir) => Ok(LocalCopy { path: dir.join(name), temporary: false }),
            Storage::Object { .. } => {
                let copy = LocalCopy {
                    path: spool.join(format!(".fetch-{}", uuid::Uuid::new_v4().simple())),
                    temporary: true,
                };
                self.download_to(name, &copy.path).await?;
                Ok(copy)
            }
        }
    }

    /// Copies `name` to the local file `target` (creating its directory).
    pub async fn download_to(&self, name: &str, target: &Path) -> Result<u64, StorageError> {
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(|e| self.failed("download", name, e))?;
        }
        match self {
            Storage::Local(dir) => {
                tokio::fs::copy(dir.join(name), target).await.map_err(|e| self.failed("download", name, e))
            }
            Storage::Object { store, prefix, .. } => {
                use tokio::io::AsyncWriteExt;
                let result =
                    store.get(&Self::object_path(prefix, name)).await.map_err(|e| self.failed("read", name, e))?;
                let mut file = tokio::fs::File::create(target).await.map_err(|e| self.failed("download", name, e))?;
                let mut stream = result.into_stream();
                let mut length = 0u64;
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| self.failed("read", name, e))?;
                    file.write_all(&chunk).await.map_err(|e| self.failed("download", name, e))?;
                    length += chunk.len() as u64;
                }
                file.flush().await.map_err(|e| self.failed("download", name, e))?;
                Ok(length)
            }
        }
    }

    /// The names of the immediate sub-locations ("directories") under this one.
    pub async fn list_dirs(&self) -> Result<Vec<String>, StorageError> {
        match self {
            Storage::Local(dir) => {
                let mut entries = match tokio::fs::read_dir(dir).await {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(e) => return Err(self.failed("list", "", e)),
                };
                let mut names = Vec::new();
                while let Some(entry) = entries.next_entry().await.map_err(|e| self.failed("list", "", e))? {
                    if entry.file_type().await.is_ok_and(|t| t.is_dir()) {
                        names.push(entry.file_name().to_string_lossy().into_owned());
                    }
                }
                Ok(names)
            }
            Storage::Object { store, prefix, .. } => {
                let listing = store.list_with_delimiter(Some(prefix)).await.map_err(|e| self.failed("list", "", e))?;
                Ok(listing.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_string)).collect())
            }
        }
    }

    /// Every file under this location, as names relative to it, with sizes.
    pub async fn list_files(&self) -> Result<Vec<(String, u64)>, StorageError> {
        match self {
            Storage::Local(dir) => {
                let dir = dir.clone();
                let result = tokio::task::spawn_blocking(move || {
                    let mut out = Vec::new();
                    list_local(&dir, &dir, &mut out)?;
                    Ok(out)
                })
                .await;
                flatten(result).map_err(|e| self.failed("list", "", e))
            }
            Storage::Object { store, prefix, .. } => {
                let objects: Vec<_> =
                    store.list(Some(prefix)).try_collect().await.map_err(|e| self.failed("list", "", e))?;
                Ok(objects
                    .into_iter()
                    .filter_map(|o| {
                        let relative = o.location.prefix_match(prefix)?.map(|p| p.as_ref().to_string());
                        Some((relative.collect::<Vec<_>>().join("/"), o.size))
                    })
                    .collect())
            }
        }
    }

    /// Deletes `name`; a missing one is fine.
    pub async fn delete(&self, name: &str) -> Result<(), StorageError> {
        match self {
            Storage::Local(dir) => match tokio::fs::remove_file(dir.join(name)).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(self.failed("delete", name, e)),
                _ => Ok(()),
            },
            Storage::Object { store, prefix, .. } => match store.delete(&Self::object_path(prefix, name)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.failed("delete", name, e)),
            },
        }
    }

    /// Deletes everything under this location; a missing one is fine.
    pub async fn delete_all(&self) -> Result<(), StorageError> {
        match self {
            Storage::Local(dir) => {
                let dir = dir.clone();
                let result = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                })
                .await;
                flatten(result).map_err(|e| self.failed("delete", "", e))
            }
            Storage::Object { store, prefix, .. } => {
                let locations = store.list(Some(prefix)).map_ok(|o| o.location).boxed();
                let deleted: Vec<_> = store.delete_stream(locations).collect().await;
                for result in deleted {
                    match result {
                        Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(self.failed("delete", "", e)),
                    }
                }
                Ok(())
            }
        }
    }

    /// Moves everything under this location to `to`, which must not exist yet (a rename between local
    /// directories of one file system; otherwise every file is copied, then the source deleted).
    pub async fn move_to(&self, to: &Storage) -> Result<(), StorageError> {
        if let (Storage::Local(from), Storage::Local(target)) = (self, to) {
            let (from, target) = (from.clone(), target.clone());
            let renamed = tokio::task::spawn_blocking(move || {
                if target.exists() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        format!("{} exists", target.display()),
                    ));
                }
                if let Some(parent) = target.parent() {
                    create_dir_all_durably(parent)?;
                }
                // A rename that fails (another file system) falls back to copying; one that was made but
                // whose directory sync failed is an error.
                if std::fs::rename(&from, &target).is_err() {
                    return Ok(false);
                }
                sync_dir(parent_or_dot(&target))?;
                sync_dir(parent_or_dot(&from))?;
                Ok(true)
            })
            .await;
            if flatten(renamed)
                .map_err(|e| StorageError::new(format!("cannot move {} to {to:?}: {e}", self.location())))?
            {
                return Ok(());
            }
        } else if !to.list_files().await?.is_empty() {
            return Err(StorageError::new(format!("cannot move {} to {}: it exists", self.location(), to.location())));
        }
        for (name, _) in self.list_files().await? {
            let bytes = self.get(&name).await?;
            to.put(&name, bytes).await?;
        }
        self.delete_all().await
    }
}

/// A storage file as a local file; a temporary download is deleted on drop.
pub struct LocalCopy {
    path: PathBuf,
    temporary: bool,
}

impl LocalCopy {
    /// The local file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LocalCopy {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn flatten<T>(result: Result<std::io::Result<T>, tokio::task::JoinError>) -> std::io::Result<T> {
    result.unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
}

/// Writes `path` (creating its directory) under a temporary name, syncs, renames.
fn write_local_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let temporary = temporary_beside(path)?;
    let written = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        rename_durably(&temporary, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// Copies `source` to `target` (creating its directory) under a temporary name, syncs, renames.
fn copy_local_atomically(source: &Path, target: &Path) -> std::io::Result<u64> {
    let temporary = temporary_beside(target)?;
    let copied = (|| {
        let length = std::fs::copy(source, &temporary)?;
        std::fs::File::open(&temporary)?.sync_all()?;
        rename_durably(&temporary, target)?;
        Ok(length)
    })();
    if copied.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    copied
}

fn temporary_beside(path: &Path) -> std::io::Result<PathBuf> {
    let parent = path.parent().ok_or_else(|| std::io::Error::other(format!("{} has no directory", path.display())))?;
    create_dir_all_durably(parent)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(parent.join(format!(".{name}.{}", uuid::Uuid::new_v4().simple())))
}

fn parent_or_dot(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

fn list_local(root: &Path, dir: &Path, out: &mut Vec<(String, u64)>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            list_local(root, &entry.path(), out)?;
        } else if kind.is_file() {
            let path = entry.path();
            let relative = path.strip_prefix(root).unwrap_or(&path);
            let name = relative.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            out.push((name, entry.metadata()?.len()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_into_their_stores() {
        let local = Storage::open("/tmp/sluice-checkpoints").expect("local");
        assert_eq!(local.local_dir(), Some(Path::new("/tmp/sluice-checkpoints")));
        assert_eq!(local.child("job").child("chk-1").location(), "/tmp/sluice-checkpoints/job/chk-1");
        let file = Storage::open("file:///var/lib/sluice").expect("file url");
        assert_eq!(file.location(), "/var/lib/sluice");

        let s3 = Storage::open("s3://bucket/some/prefix/").expect("s3");
        assert!(s3.local_dir().is_none());
        assert_eq!(s3.location(), "s3://bucket/some/prefix");
        assert_eq!(s3.child("job-1/chk-2").location(), "s3://bucket/some/prefix/job-1/chk-2");
        assert_eq!(s3.describe("chk-2/0-0.snapshot"), "s3://bucket/some/prefix/chk-2/0-0.snapshot");
        assert_eq!(Storage::open("s3://bucket").expect("bare bucket").location(), "s3://bucket");

        // GCS: the configuration is wired (no request is made until a file is read or written).
        let gcs = Storage::open("gs://checkpoints/sluice").expect("gcs");
        assert_eq!(gcs.child("j").location(), "gs://checkpoints/sluice/j");
        assert!(is_object_store_url("gs://checkpoints/sluice") && !is_object_store_url("/data"));

        for bad in ["", "ftp://host/x", "s3:///no-bucket"] {
            assert!(Storage::open(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[tokio::test]
    async fn a_probe_writes_reads_and_deletes_and_names_what_fails() -> Result<(), StorageError> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::new(e.to_string()))?;
        let root = Storage::open(&dir.path().join("checkpoints").display().to_string())?;
        root.probe().await?;
        let left: Vec<_> =
            std::fs::read_dir(dir.path().join("checkpoints")).map_err(|e| StorageError::new(e.to_string()))?.collect();
        assert!(left.is_empty(), "the probe object is deleted: {left:?}");
        // A location under a regular file cannot hold anything.
        std::fs::write(dir.path().join("file"), b"x").map_err(|e| StorageError::new(e.to_string()))?;
        let blocked = Storage::open(&dir.path().join("file/checkpoints").display().to_string())?;
        let error = blocked.probe().await.err().map(|e| e.message).unwrap_or_default();
        assert!(error.contains("cannot write") && error.contains(".sluice-probe-"), "{error}");
        assert_eq!(root.credentials_source(), "the local file system (this process's permissions)");
        Ok(())
    }

    #[tokio::test]
    async fn a_local_directory_supports_every_operation() -> Result<(), StorageError> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::new(e.to_string()))?;
        let root = Storage::open(&dir.path().display().to_string())?;
        let chk = root.child("job/chk-1");
        chk.put("_metadata", b"{}".to_vec()).await?;
        let source = dir.path().join("source");
        std::fs::write(&source, b"snapshot").map_err(|e| StorageError::new(e.to_string()))?;
        assert_eq!(chk.upload("0-0.snapshot", &source).await?, 8);
        assert!(chk.exists("_metadata").await? && !chk.exists("missing").await?);
        assert_eq!(chk.get("0-0.snapshot").await?, b"snapshot");
        let mut files = root.child("job").list_files().await?;
        files.sort();
        assert_eq!(files, vec![("chk-1/0-0.snapshot".to_string(), 8), ("chk-1/_metadata".to_string(), 2)]);
        assert_eq!(root.child("job").list_dirs().await?, vec!["chk-1".to_string()]);
        let fetched = chk.fetch("0-0.snapshot", dir.path()).await?;
        assert_eq!(std::fs::read(fetched.path()).map_err(|e| StorageError::new(e.to_string()))?, b"snapshot");

        let savepoint = root.child("savepoints/sp-1");
        chk.move_to(&savepoint).await?;
        assert!(!chk.exists("_metadata").await? && savepoint.exists("_metadata").await?);
        assert!(root.child("job").child("chk-2").move_to(&savepoint).await.is_err(), "the target exists");
        savepoint.delete("_metadata").await?;
        savepoint.delete("_metadata").await?;
        root.delete_all().await?;
        root.delete_all().await?;
        assert!(!dir.path().exists() || root.list_files().await?.is_empty());
        Ok(())
    }
}
