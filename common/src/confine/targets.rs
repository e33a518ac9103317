//! Where savepoints may be written and read: under a configured prefix, a local directory or a prefix in a
//! bucket (`s3://bucket/prefix`, `gs://bucket/prefix`).
//!
//! A local target is resolved like any path (see [`super::paths`]), so `..` and symlinks cannot lead out of
//! a prefix. An object-store target must name the prefix's scheme and bucket and continue its path by whole
//! segments; `s3a://` counts as `s3://`. Percent-encoded characters are refused in object-store targets:
//! the store decodes them after the check, so a `%2F` would be a separator the check never saw.
use std::path::{Path, PathBuf};

use super::paths::{resolve, PathError};
use crate::storage::is_object_store_url;

/// One allowed savepoint location.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Prefix {
    Local(PathBuf),
    Object { scheme: String, bucket: String, segments: Vec<String> },
}

/// The allowed savepoint locations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavepointTargets {
    prefixes: Vec<Prefix>,
    /// The prefixes as configured, for messages.
    described: Vec<String>,
}

impl SavepointTargets {
    /// Resolves each location (local against `base`); empty entries are skipped.
    pub fn resolve(base: &Path, locations: &[String]) -> Result<SavepointTargets, PathError> {
        let mut targets = SavepointTargets::default();
        for location in locations.iter().map(|l| l.trim()).filter(|l| !l.is_empty()) {
            let prefix =
                parse(base, location).map_err(|e| PathError(format!("the savepoint prefix '{location}': {e}")))?;
            if !targets.prefixes.contains(&prefix) {
                targets.described.push(describe(&prefix));
                targets.prefixes.push(prefix);
            }
        }
        Ok(targets)
    }

    /// Whether `location` (a directory, `file://`, `s3://` or `gs://`) lies under an allowed prefix; the error
    /// says why not, naming the allowed ones.
    pub fn check(&self, base: &Path, location: &str) -> Result<(), String> {
        let target = parse(base, location.trim()).map_err(|e| format!("'{location}': {e}"))?;
        if self.prefixes.iter().any(|prefix| is_under(&target, prefix)) {
            return Ok(());
        }
        Err(format!(
            "'{location}' is outside the allowed savepoint locations ({}); an operator can allow more with \
             --allowed-savepoint-prefixes (ALLOWED_SAVEPOINT_PREFIXES)",
            self.describe()
        ))
    }

    /// The allowed prefixes, for messages.
    pub fn describe(&self) -> String {
        if self.described.is_empty() {
            return "none".into();
        }
        self.described.join(", ")
    }
}

fn parse(base: &Path, location: &str) -> Result<Prefix, PathError> {
    if let Some(path) = location.strip_prefix("file://") {
        return Ok(Prefix::Local(resolve(base, path)?));
    }
    if !location.contains("://") {
        return Ok(Prefix::Local(resolve(base, location)?));
    }
    if !is_object_store_url(location) {
        return Err(PathError("only a directory, file://, s3:// or gs:// is a savepoint location".into()));
    }
    if location.contains('%') {
        return Err(PathError("percent-encoded characters are not allowed in an object-store location".into()));
    }
    let url = url::Url::parse(location).map_err(|e| PathError(format!("not a URL: {e}")))?;
    let bucket = url.host_str().filter(|b| !b.is_empty()).ok_or_else(|| PathError("it names no bucket".into()))?;
    let scheme = if url.scheme() == "s3a" { "s3" } else { url.scheme() };
    // The URL parser has already resolved `.` and `..` segments, as the object store will.
    let segments = url.path().split('/').filter(|s| !s.is_empty()).map(str::to_string).collect();
    Ok(Prefix::Object { scheme: scheme.to_string(), bucket: bucket.to_string(), segments })
}

fn is_under(target: &Prefix, prefix: &Prefix) -> bool {
    match (target, prefix) {
        (Prefix::Local(target), Prefix::Local(prefix)) => target.starts_with(prefix),
        (
            Prefix::Object { scheme, bucket, segments },
            Prefix::Object { scheme: allowed_scheme, bucket: allowed_bucket, segments: allowed },
        ) => scheme == allowed_scheme && bucket == allowed_bucket && segments.starts_with(allowed),
        _ => false,
    }
}

fn describe(prefix: &Prefix) -> String {
    match prefix {
        Prefix::Local(dir) => dir.display().to_string(),
        Prefix::Object { scheme, bucket, segments } if segments.is_empty() => format!("{scheme}://{bucket}"),
        Prefix::Object { scheme, bucket, segments } => format!("{scheme}://{bucket}/{}", segments.join("/")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(base: &Path, locations: &[&str]) -> SavepointTargets {
        let locations: Vec<String> = locations.iter().map(|l| l.to_string()).collect();
        SavepointTargets::resolve(base, &locations).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn local_targets_must_lie_under_a_local_prefix() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let base = std::fs::canonicalize(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(base.join("data/savepoints")).unwrap_or_else(|e| panic!("{e}"));
        let allowed = targets(&base, &["data/savepoints", "s3://bucket/savepoints"]);
        assert_eq!(allowed.check(&base, "data/savepoints/sp-1"), Ok(()));
        assert_eq!(allowed.check(&base, &format!("file://{}/data/savepoints/x", base.display())), Ok(()));
        for outside in ["/", "/etc", "data", "data/savepoints2", "data/savepoints/../../x"] {
            let refused = allowed.check(&base, outside);
            assert!(
                refused.as_ref().is_err_and(|e| e.contains("outside the allowed savepoint")),
                "{outside}: {refused:?}"
            );
        }
        assert!(allowed.check(&base, "data/savepoints/new/../x").is_err(), "'..' in what does not exist yet");
    }

    #[test]
    fn object_store_targets_must_share_scheme_bucket_and_leading_segments() {
        let base = Path::new("/");
        let allowed = targets(base, &["s3://bucket/savepoints", "gs://other"]);
        for inside in
            ["s3://bucket/savepoints", "s3://bucket/savepoints/a/b", "s3a://bucket/savepoints/a", "gs://other/x"]
        {
            assert_eq!(allowed.check(base, inside), Ok(()), "{inside}");
        }
        for outside in [
            "s3://bucket/savepoints2",
            "s3://bucket/other",
            "s3://bucket",
            "s3://evil/savepoints",
            "gs://bucket/savepoints",
            "s3://bucket/savepoints/../other",
            "s3://bucket/savepoints/%2e%2e/other",
            "http://bucket/savepoints",
        ] {
            assert!(allowed.check(base, outside).is_err(), "{outside}");
        }
    }

    #[test]
    fn no_prefix_allows_nothing_and_says_so() {
        let base = Path::new("/");
        let none = targets(base, &[]);
        let refused = none.check(base, "/tmp/x").err().unwrap_or_default();
        assert!(refused.contains("(none)"), "{refused}");
    }
}
