//! Where the binaries under test live.
//!
//! Cargo builds the binaries of other packages before an integration test only when told to, so the test
//! runner (`scripts/test.sh`) runs `cargo build --bins` first, and the tests look for the result:
//! 1. `$SLUICE_BIN_DIR`, when set (to test a release build or an installed copy);
//! 2. the profile directory this test executable was built into (`<target>/debug/deps/<test>` → `<target>/debug`),
//!    which is right for `cargo test` and `cargo nextest` alike, or that holds this binary (`sluice-chaos`);
//! 3. `$CARGO_TARGET_DIR/debug`.
use std::path::{Path, PathBuf};

/// The environment variable that overrides where binaries are looked for.
pub const BIN_DIR_VARIABLE: &str = "SLUICE_BIN_DIR";

/// The JobManager binary's name.
pub const JOB_MANAGER: &str = "sluice-jobmanager";
/// The TaskManager binary's name.
pub const TASK_MANAGER: &str = "sluice-taskmanager";
/// The command-line client's name.
pub const CLI: &str = "sluice";

/// The path of the binary `name`, from the first directory (in the order of the module doc) that has it.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let candidates = candidate_dirs();
    for dir in &candidates {
        let path = dir.join(name);
        if path.is_file() {
            return Ok(path);
        }
    }
    let searched: Vec<String> = candidates.iter().map(|d| d.display().to_string()).collect();
    anyhow::bail!(
        "binary '{name}' not found in [{}]; build it first with `cargo build --bins`, or point {BIN_DIR_VARIABLE} at it",
        searched.join(", ")
    )
}

fn candidate_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os(BIN_DIR_VARIABLE) {
        dirs.push(PathBuf::from(dir));
    }
    if let Ok(exe) = std::env::current_exe() {
        // <target>/debug/deps/<test binary>: the binaries sit one level above `deps`; a binary of this
        // package (`sluice-chaos`) sits beside them.
        match exe.parent() {
            Some(deps) if deps.ends_with("deps") => dirs.extend(deps.parent().map(Path::to_path_buf)),
            Some(profile_dir) => dirs.push(profile_dir.to_path_buf()),
            None => {}
        }
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        dirs.push(PathBuf::from(target).join("debug"));
    }
    dirs
}

/// A test server installed outside the build (`s3s-fs`, `nisshi`): `$<variable>`, else `name` on the PATH, else
/// `$HOME/.cache/sluice/tools/bin/<name>`, where `scripts/install-test-tools.sh` (run by `scripts/test.sh`)
/// installs it.
pub fn test_tool(name: &str, variable: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(variable) {
        return Ok(PathBuf::from(path));
    }
    let on_path =
        std::env::var_os("PATH").map(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file()));
    if let Some(path) = on_path.flatten() {
        return Ok(path);
    }
    let cached = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/sluice/tools/bin").join(name));
    match cached {
        Some(path) if path.is_file() => Ok(path),
        _ => anyhow::bail!(
            "{name} not found (${variable}, PATH, ~/.cache/sluice/tools/bin): scripts/install-test-tools.sh \
             installs it (scripts/test.sh runs it)"
        ),
    }
}
