//! Configuration files merged under flags and environment variables.
//!
//! Every setting of a Sluice binary is a clap argument with an environment variable. A TOML config file
//! (`--config FILE` or `SLUICE_CONFIG`) may set any of them, keyed by the flag's long name
//! (`rest-addr = "0.0.0.0:8081"`; `rest_addr` is accepted too). The file is applied by exporting each key as
//! the argument's environment variable when that variable is not already set, so precedence is
//! flag > environment > file > default, and clap reports bad values with its usual messages.
use std::path::{Path, PathBuf};

/// Why a config file could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A key names no setting.
    #[error("config file {path}: unknown key '{key}'{hint}; known keys: {known}")]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// A "did you mean" suggestion, or empty.
        hint: String,
        /// Every known key.
        known: String,
    },
    /// A value is a table or array where a scalar is expected.
    #[error("config file {path}: key '{key}' must be a string, number or boolean")]
    NotScalar {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
    },
}

/// Finds the config file named by `--config FILE`, `--config=FILE` or `SLUICE_CONFIG`, and exports its keys
/// as the environment variables of `command`'s arguments (only those not already set).
///
/// Call it before any other thread starts (before the tokio runtime): it sets environment variables.
pub fn load_config_file_into_env(command: &clap::Command) -> Result<Option<PathBuf>, ConfigError> {
    let path = config_path_from_args(std::env::args()).or_else(|| std::env::var_os("SLUICE_CONFIG").map(PathBuf::from));
    let Some(path) = path else { return Ok(None) };
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
    for (env_name, value) in config_assignments(command, &path, &text)? {
        if std::env::var_os(&env_name).is_none() {
            std::env::set_var(env_name, value);
        }
    }
    Ok(Some(path))
}

fn config_path_from_args(args: impl Iterator<Item = String>) -> Option<PathBuf> {
    let mut args = args.skip(1);
    while let Some(arg) = args.next() {
        if arg == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(value) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(value));
        }
    }
    None
}

/// Maps each key of the TOML `text` to (environment variable, value), validating every key.
pub fn config_assignments(
    command: &clap::Command,
    path: &Path,
    text: &str,
) -> Result<Vec<(String, String)>, ConfigError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
    let known: Vec<(String, String)> = command
        .get_arguments()
        .filter_map(|arg| {
            let long = arg.get_long()?;
            let env = arg.get_env()?.to_str()?;
            (long != "config").then(|| (long.to_string(), env.to_string()))
        })
        .collect();
    let mut assignments = Vec::with_capacity(table.len());
    for (key, value) in table {
        let normalized = key.replace('_', "-");
        let Some((_, env)) = known.iter().find(|(long, _)| *long == normalized) else {
            let names: Vec<&str> = known.iter().map(|(long, _)| long.as_str()).collect();
            let hint = crate::job::did_you_mean(&normalized, names.iter().copied())
                .map(|s| format!(" (did you mean '{s}'?)"))
                .unwrap_or_default();
            return Err(ConfigError::UnknownKey { path: path.to_path_buf(), key, hint, known: names.join(", ") });
        };
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Datetime(d) => d.to_string(),
            toml::Value::Array(_) | toml::Value::Table(_) => {
                return Err(ConfigError::NotScalar { path: path.to_path_buf(), key })
            }
        };
        assignments.push((env.clone(), value));
    }
    Ok(assignments)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, Command};

    fn command() -> Command {
        Command::new("t")
            .arg(Arg::new("rest_addr").long("rest-addr").env("REST_ADDR"))
            .arg(Arg::new("slots").long("slots").env("TASK_SLOTS"))
    }

    #[test]
    fn keys_map_to_the_arguments_environment_variables() {
        let got = config_assignments(&command(), Path::new("c.toml"), "rest-addr = \"1.2.3.4:5\"\nslots = 4\n");
        let got = got.unwrap_or_default();
        assert_eq!(got, vec![("REST_ADDR".into(), "1.2.3.4:5".into()), ("TASK_SLOTS".into(), "4".into())]);
    }

    #[test]
    fn an_unknown_key_is_an_error_that_suggests_the_near_match() {
        let err = config_assignments(&command(), Path::new("c.toml"), "slotz = 4").err();
        let message = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("unknown key 'slotz'"), "{message}");
        assert!(message.contains("did you mean 'slots'"), "{message}");
    }

    #[test]
    fn the_config_flag_is_found_in_both_spellings() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>().into_iter();
        assert_eq!(config_path_from_args(args(&["bin", "--config", "a.toml"])), Some("a.toml".into()));
        assert_eq!(config_path_from_args(args(&["bin", "--config=b.toml"])), Some("b.toml".into()));
        assert_eq!(config_path_from_args(args(&["bin", "--slots", "2"])), None);
    }
}
