//! Resolving a path the way the file system will, and asking whether it lies under a root.
//!
//! A path from a job file or a request is made absolute against the process's working directory, then its
//! longest existing prefix is canonicalized (every symlink and `..` in it resolved by the file system), and
//! the rest, which does not exist yet (a sink's output directory), is appended as it is. A `..` or `.` in
//! that rest is refused: it would be resolved only when the directory is created, after the check. The
//! result is what opening the path would reach *now*; roots are resolved the same way, once, at start.
//!
//! ```
//! use sluice_common::confine::paths::{resolve, Roots};
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::create_dir(dir.path().join("data")).unwrap();
//! let roots = Roots::resolve(dir.path(), &["data".to_string()]).unwrap();
//! let inside = resolve(dir.path(), "data/output/word_count").unwrap();
//! assert!(roots.contains(&inside));
//! let escaped = resolve(dir.path(), "data/../../x").unwrap();
//! assert!(!roots.contains(&escaped));
//! assert!(resolve(dir.path(), "data/new/../x").is_err(), "'..' in the part that does not exist yet");
//! ```
use std::path::{Component, Path, PathBuf};

/// How deep the search for the longest existing prefix goes: the number of components of the path, which a
/// path longer than this cannot have on any file system Sluice runs on (Linux's PATH_MAX is 4096 bytes).
const PATH_COMPONENTS_MAX: usize = 4096;

/// Why a path cannot be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PathError(pub String);

/// `path` as opening it would reach it now: absolute (against `base` when relative), its longest existing
/// prefix canonicalized, the rest appended. Refuses an empty path, a NUL byte, and `.`/`..` in the part that
/// does not exist yet.
pub fn resolve(base: &Path, path: &str) -> Result<PathBuf, PathError> {
    if path.trim().is_empty() {
        return Err(PathError("the path is empty".into()));
    }
    if path.contains('\0') {
        return Err(PathError("the path holds a NUL byte".into()));
    }
    let absolute = if Path::new(path).is_absolute() { PathBuf::from(path) } else { base.join(path) };
    let mut existing = absolute.as_path();
    let mut rest: Vec<Component<'_>> = Vec::new();
    for _ in 0..PATH_COMPONENTS_MAX {
        if let Ok(canonical) = std::fs::canonicalize(existing) {
            let mut resolved = canonical;
            for component in rest.iter().rev() {
                match component {
                    Component::Normal(part) => resolved.push(part),
                    _ => {
                        return Err(PathError(format!(
                            "'..' or '.' in the part of {} that does not exist yet",
                            absolute.display()
                        )))
                    }
                }
            }
            return Ok(resolved);
        }
        let Some(parent) = existing.parent() else { break };
        if let Some(last) = existing.components().next_back() {
            rest.push(last);
        }
        existing = parent;
    }
    Err(PathError(format!("no part of {} exists, not even its root", absolute.display())))
}

/// A set of directories, each resolved at start (see [`resolve`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roots(Vec<PathBuf>);

impl Roots {
    /// Resolves each of `dirs` against `base`; empty entries are skipped (so `""` means no directory).
    pub fn resolve(base: &Path, dirs: &[String]) -> Result<Roots, PathError> {
        let mut roots = Vec::with_capacity(dirs.len());
        for dir in dirs.iter().map(|d| d.trim()).filter(|d| !d.is_empty()) {
            roots.push(resolve(base, dir).map_err(|e| PathError(format!("the directory '{dir}': {e}")))?);
        }
        Ok(Roots(roots))
    }

    /// Whether `resolved` (a result of [`resolve`]) is one of the roots or lies under one. Compared by whole
    /// components: `/data2` is not under `/data`.
    pub fn contains(&self, resolved: &Path) -> bool {
        self.0.iter().any(|root| resolved.starts_with(root))
    }

    /// The roots, for messages: `/work/examples, /work/data`, or `none` when there are none.
    pub fn describe(&self) -> String {
        if self.0.is_empty() {
            return "none".into();
        }
        self.0.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"))
    }

    #[test]
    fn a_relative_path_resolves_against_the_base_and_an_absolute_one_ignores_it() {
        let dir = tmp();
        let base = std::fs::canonicalize(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resolve(&base, "data/out"), Ok(base.join("data").join("out")));
        assert_eq!(resolve(&base, "/etc/passwd"), Ok(PathBuf::from("/etc/passwd")));
        assert_eq!(resolve(&base, "/etc/../etc/./passwd"), Ok(PathBuf::from("/etc/passwd")));
    }

    #[test]
    fn dot_dot_that_escapes_is_resolved_and_dot_dot_in_what_does_not_exist_is_refused() {
        let dir = tmp();
        let base = std::fs::canonicalize(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(base.join("data")).unwrap_or_else(|e| panic!("{e}"));
        let roots = Roots::resolve(&base, &["data".into()]).unwrap_or_else(|e| panic!("{e}"));
        let escaped = resolve(&base, "data/../../x").unwrap_or_else(|e| panic!("{e}"));
        assert!(!roots.contains(&escaped), "{}", escaped.display());
        assert!(resolve(&base, "data/missing/../../../x").is_err());
        assert!(resolve(&base, "").is_err());
        assert!(resolve(&base, "a\0b").is_err());
    }

    #[test]
    fn a_symlink_inside_a_root_that_points_out_of_it_is_outside() {
        let dir = tmp();
        let base = std::fs::canonicalize(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let outside = base.join("outside");
        std::fs::create_dir_all(&outside).unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(base.join("data")).unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink(&outside, base.join("data").join("link")).unwrap_or_else(|e| panic!("{e}"));
        let roots = Roots::resolve(&base, &["data".into()]).unwrap_or_else(|e| panic!("{e}"));
        for path in ["data/link", "data/link/file", "data/link/new/dir"] {
            let resolved = resolve(&base, path).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert!(resolved.starts_with(&outside), "{path} → {}", resolved.display());
            assert!(!roots.contains(&resolved), "{path}");
        }
        assert!(roots.contains(&resolve(&base, "data/real/new").unwrap_or_else(|e| panic!("{e}"))));
    }

    #[test]
    fn roots_compare_whole_components_and_skip_empty_entries() {
        let roots = Roots(vec![PathBuf::from("/srv/data")]);
        assert!(roots.contains(Path::new("/srv/data")));
        assert!(roots.contains(Path::new("/srv/data/x")));
        assert!(!roots.contains(Path::new("/srv/data2/x")));
        assert!(!roots.contains(Path::new("/srv")));
        let none = Roots::resolve(Path::new("/"), &[String::new(), " ".into()]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(none, Roots::default());
        assert_eq!(none.describe(), "none");
    }
}
