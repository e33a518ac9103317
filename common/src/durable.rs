//! Renames that are commits, made to survive a power loss.
//!
//! A checkpoint's `_metadata`, a task's snapshot file, a savepoint's directory and an exactly-once sink's
//! part file are each committed by a rename: written under a temporary name, synced, renamed into place.
//! Syncing the file makes its *contents* durable, but the rename is a change to the *directory*, and on
//! ext4, XFS and most other file systems a directory entry is only on disk once the directory itself is
//! synced. Without that a crash shortly after a checkpoint completed can bring back a directory that lacks
//! the `_metadata` the metadata store says is there, or a sink whose committed file is gone again.
//!
//! The decision: every rename that commits goes through [`rename_durably`], which syncs the directory the
//! name went into (and the one it left, when they differ); every directory created to hold a commit goes
//! through [`create_dir_all_durably`], which syncs the parent of each directory it made. An error from a
//! directory sync is returned, naming the directory, never ignored: the caller's commit did not happen as
//! far as anyone may rely on.
use std::io;
use std::path::{Path, PathBuf};

/// Syncs `dir` itself (its entries: names created, renamed or removed in it), so they survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    let opened = std::fs::File::open(dir).map_err(|e| in_dir(dir, e))?;
    opened.sync_all().map_err(|e| in_dir(dir, e))
}

/// Renames `from` to `to`, then syncs the directory of `to` (and of `from`, when it is another one).
/// Once this returns, the rename survives a crash; an error may come after the rename was made.
pub fn rename_durably(from: &Path, to: &Path) -> io::Result<()> {
    rename_then_sync(from, to, &mut sync_dir)
}

/// [`rename_durably`] with the directory sync given, so tests can see which directories are synced.
fn rename_then_sync(from: &Path, to: &Path, sync: &mut dyn FnMut(&Path) -> io::Result<()>) -> io::Result<()> {
    std::fs::rename(from, to)?;
    let target_dir = parent_of(to);
    sync(&target_dir)?;
    let source_dir = parent_of(from);
    if source_dir != target_dir {
        sync(&source_dir)?;
    }
    Ok(())
}

/// `std::fs::create_dir_all`, then syncs the parent of every directory it created, so the new directories
/// are on disk before anything is committed into them.
pub fn create_dir_all_durably(dir: &Path) -> io::Result<()> {
    create_then_sync(dir, &mut sync_dir)
}

fn create_then_sync(dir: &Path, sync: &mut dyn FnMut(&Path) -> io::Result<()>) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    // The directories that do not exist yet, deepest first; their parents are what must be synced.
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.as_os_str().is_empty() && !d.exists()).collect();
    std::fs::create_dir_all(dir)?;
    for created in missing.iter().rev() {
        sync(&parent_of(created))?;
    }
    Ok(())
}

/// The directory holding `path` (`.` for a bare name).
fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn in_dir(dir: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("cannot sync the directory {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recording(synced: &mut Vec<PathBuf>) -> impl FnMut(&Path) -> io::Result<()> + '_ {
        |dir| {
            synced.push(dir.to_path_buf());
            Ok(())
        }
    }

    #[test]
    fn a_rename_syncs_the_directory_it_went_into_and_the_one_it_left() -> io::Result<()> {
        let root = tempfile::tempdir()?;
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        std::fs::create_dir_all(&a)?;
        std::fs::create_dir_all(&b)?;
        std::fs::write(a.join("x.tmp"), b"x")?;
        let mut synced = Vec::new();
        rename_then_sync(&a.join("x.tmp"), &a.join("x"), &mut recording(&mut synced))?;
        assert_eq!(synced, vec![a.clone()], "a rename within one directory syncs it once");
        synced.clear();
        rename_then_sync(&a.join("x"), &b.join("x"), &mut recording(&mut synced))?;
        assert_eq!(synced, vec![b.clone(), a.clone()]);
        assert!(b.join("x").is_file());
        rename_durably(&b.join("x"), &b.join("y"))?;
        assert!(b.join("y").is_file());
        Ok(())
    }

    #[test]
    fn a_failed_directory_sync_is_reported_not_swallowed() -> io::Result<()> {
        let root = tempfile::tempdir()?;
        std::fs::write(root.path().join("x.tmp"), b"x")?;
        let mut failing = |_: &Path| -> io::Result<()> { Err(io::Error::other("disk gone")) };
        let error = rename_then_sync(&root.path().join("x.tmp"), &root.path().join("x"), &mut failing)
            .expect_err("the sync failed");
        assert!(error.to_string().contains("disk gone"), "{error}");

        let gone = root.path().join("never-made");
        let error = sync_dir(&gone).expect_err("a missing directory");
        assert!(error.to_string().contains("never-made"), "the error names the directory: {error}");
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
        Ok(())
    }

    #[test]
    fn creating_directories_syncs_the_parent_of_each_new_one() -> io::Result<()> {
        let root = tempfile::tempdir()?;
        let deep = root.path().join("job").join("chk-1");
        let mut synced = Vec::new();
        create_then_sync(&deep, &mut recording(&mut synced))?;
        assert_eq!(synced, vec![root.path().to_path_buf(), root.path().join("job")]);
        assert!(deep.is_dir());
        synced.clear();
        create_then_sync(&deep, &mut recording(&mut synced))?;
        assert!(synced.is_empty(), "nothing new, nothing synced: {synced:?}");
        create_dir_all_durably(&root.path().join("other"))?;
        Ok(())
    }
}
