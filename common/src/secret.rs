//! Secrets on disk: REST tokens and the cluster secret.
//!
//! A secret file holds one or more secrets, one per line (blank lines and `#` comments are skipped). More than
//! one is how a secret is rotated without downtime: add the new one, move the clients, remove the old one.
//! Readers compare in constant time ([`SecretSet::matches`]) and re-read a file when it changes
//! ([`SecretFile`]), so a Kubernetes Secret mounted as a file is picked up without a restart.
//!
//! A process that must have a secret and was given none generates one ([`generate`]), writes it with mode 0600
//! beside its data, and says where in its log; local clusters use that, Kubernetes mounts one.
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use subtle::ConstantTimeEq as _;

/// Random bytes in a generated secret (256 bits), written as hex.
pub const GENERATED_SECRET_BYTES: usize = 32;

/// The shortest secret accepted from a file or the environment, in characters: a short one can be guessed by
/// anyone who can reach a port.
pub const SECRET_CHARS_MIN: usize = 16;

/// The longest secret file read, in bytes (a handful of secrets of a few hundred characters each).
pub const SECRET_FILE_BYTES_MAX: u64 = 64 * 1024;

/// Why a secret file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file cannot be read (missing, unreadable, too long).
    #[error("cannot read the secret file {path}: {detail}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// The file holds no secret, or one that is too short.
    #[error("{what}: {detail}")]
    Invalid {
        /// The file, or the variable, that held it.
        what: String,
        /// What is wrong.
        detail: String,
    },
    /// The file cannot be written.
    #[error("cannot write the secret file {path}: {source}")]
    Unwritable {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// A new random secret: [`GENERATED_SECRET_BYTES`] from the operating system's generator, as hex.
pub fn generate() -> String {
    let mut bytes = [0u8; GENERATED_SECRET_BYTES];
    rand::Rng::fill(&mut rand::rng(), &mut bytes[..]);
    hex::encode(bytes)
}

/// The secrets in `text`: one a line, trimmed, without blank lines and `#` comments. `what` names the source in
/// errors. An empty set, or a secret shorter than [`SECRET_CHARS_MIN`], is an error.
pub fn parse(text: &str, what: &str) -> Result<Vec<String>, SecretError> {
    let secrets: Vec<String> =
        text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string).collect();
    if secrets.is_empty() {
        return Err(SecretError::Invalid { what: what.into(), detail: "it holds no secret".into() });
    }
    if let Some(short) = secrets.iter().position(|s| s.chars().count() < SECRET_CHARS_MIN) {
        let detail = format!("secret {} is shorter than {SECRET_CHARS_MIN} characters", short + 1);
        return Err(SecretError::Invalid { what: what.into(), detail });
    }
    if secrets.iter().any(|s| s.chars().any(char::is_whitespace)) {
        return Err(SecretError::Invalid { what: what.into(), detail: "a secret holds white space".into() });
    }
    Ok(secrets)
}

/// Reads the secrets of the file at `path` (see [`parse`]).
pub fn read(path: &Path) -> Result<Vec<String>, SecretError> {
    let unreadable = |detail: String| SecretError::Unreadable { path: path.to_path_buf(), detail };
    let length = std::fs::metadata(path).map_err(|e| unreadable(e.to_string()))?.len();
    if length > SECRET_FILE_BYTES_MAX {
        return Err(unreadable(format!("it is longer than {SECRET_FILE_BYTES_MAX} bytes")));
    }
    let text = std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))?;
    parse(&text, &path.display().to_string())
}

/// The first secret of the file at `path`, for a client that sends one.
pub fn read_first(path: &Path) -> Result<String, SecretError> {
    let mut secrets = read(path)?;
    Ok(secrets.swap_remove(0))
}

/// Writes a newly [`generate`]d secret to `path` with mode 0600, unless the file exists already, and returns
/// the secrets the file holds then (the new one, or those already there). Whoever creates the file first wins,
/// so two processes racing to create it agree.
pub fn read_or_generate(path: &Path) -> Result<(Vec<String>, bool), SecretError> {
    let unwritable = |source| SecretError::Unwritable { path: path.to_path_buf(), source };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(unwritable)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            let secret = generate();
            file.write_all(format!("{secret}\n").as_bytes()).and_then(|()| file.sync_all()).map_err(unwritable)?;
            Ok((vec![secret], true))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok((read(path)?, false)),
        Err(e) => Err(unwritable(e)),
    }
}

/// A set of accepted secrets.
#[derive(Clone, Default)]
pub struct SecretSet(Vec<String>);

impl std::fmt::Debug for SecretSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretSet({} secrets)", self.0.len())
    }
}

impl SecretSet {
    /// The set of `secrets`.
    pub fn new(secrets: Vec<String>) -> SecretSet {
        SecretSet(secrets)
    }

    /// Whether `offered` is one of the secrets, compared in time that does not depend on where they differ.
    pub fn matches(&self, offered: &str) -> bool {
        // Every secret is compared, so the time does not tell which one matched either.
        self.0.iter().fold(false, |found, secret| found | bool::from(secret.as_bytes().ct_eq(offered.as_bytes())))
    }

    /// The first secret: the one a client sends (during a rotation, the new one is put first).
    pub fn first(&self) -> Option<&str> {
        self.0.first().map(String::as_str)
    }

    /// Every secret.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A secret file that is re-read when it changes (its modification time or length), so secrets rotate
/// without a restart. A file that becomes unreadable or empty keeps the last good secrets and the error is
/// logged: a half-written update must not lock everyone out.
#[derive(Debug)]
pub struct SecretFile {
    path: PathBuf,
    state: Mutex<(Option<(SystemTime, u64)>, SecretSet)>,
}

impl SecretFile {
    /// Reads `path` now; an error here is the caller's to report (a process does not start without its
    /// secrets).
    pub fn open(path: &Path) -> Result<SecretFile, SecretError> {
        let stamp = file_stamp(path);
        let secrets = SecretSet::new(read(path)?);
        Ok(SecretFile { path: path.to_path_buf(), state: Mutex::new((stamp, secrets)) })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The secrets now: re-read first if the file changed since the last look.
    pub fn current(&self) -> SecretSet {
        let stamp = file_stamp(&self.path);
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if stamp.is_some() && stamp != state.0 {
            match read(&self.path) {
                Ok(secrets) => {
                    tracing::info!(path = %self.path.display(), secrets = secrets.len(), "secret file re-read");
                    *state = (stamp, SecretSet::new(secrets));
                }
                Err(e) => {
                    tracing::warn!("{e}; the secrets read before stay in use");
                    state.0 = stamp;
                }
            }
        }
        state.1.clone()
    }
}

/// What tells a changed file: its modification time and length.
fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn a_secret_file_skips_comments_and_blank_lines_and_refuses_short_secrets() -> Result<(), SecretError> {
        let long = "a".repeat(SECRET_CHARS_MIN);
        assert_eq!(parse(&format!("# old\n\n {long} \n"), "f")?, vec![long.clone()]);
        assert!(parse("# nothing\n", "f").is_err());
        assert!(parse("short\n", "f").is_err());
        assert!(parse(&format!("{long} {long}\n"), "f").is_err(), "a secret with a space in it is a mistake");
        Ok(())
    }

    #[test]
    fn a_set_matches_only_its_own_secrets() {
        let set = SecretSet::new(vec!["a".repeat(20), "b".repeat(20)]);
        assert!(set.matches(&"b".repeat(20)));
        assert!(!set.matches(&"b".repeat(19)));
        assert!(!set.matches(""));
        assert!(!SecretSet::default().matches(""));
    }

    #[test]
    fn a_generated_secret_is_written_once_with_mode_0600_and_then_read_back() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("sub").join("admin.token");
        let (first, created) = read_or_generate(&path)?;
        assert!(created);
        assert_eq!(first[0].len(), GENERATED_SECRET_BYTES * 2);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
        }
        let (again, created) = read_or_generate(&path)?;
        assert!(!created);
        assert_eq!(again, first, "an existing file is read, not replaced");
        assert_ne!(generate(), generate());
        Ok(())
    }

    #[test]
    fn a_changed_file_is_read_again_and_a_broken_one_keeps_the_old_secrets() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("tokens");
        let (old, new) = ("o".repeat(20), "n".repeat(24));
        std::fs::write(&path, format!("{old}\n"))?;
        let file = SecretFile::open(&path)?;
        assert!(file.current().matches(&old));
        std::fs::write(&path, format!("{old}\n{new}\n"))?;
        assert!(file.current().matches(&new), "a longer file is a changed file");
        std::fs::write(&path, "# emptied by a bad edit, of another length\n")?;
        let kept = file.current();
        assert!(kept.matches(&old) && kept.matches(&new));
        Ok(())
    }
}
