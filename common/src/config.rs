//! Configuration files merged under flags and environment variables.
//!
//! Every setting of a Sluice binary is a clap argument with an environment variable. A TOML config file
//! (`--config FILE` or `SLUICE_CONFIG`) may set any of them, keyed by the flag's long name
//! (`rest-addr = "0.0.0.0:8081"`; `rest_addr` is accepted too). [`parse_with_config_file`] reads the file
//! first and makes each of its values the default of its argument, then lets clap parse the command line
//! and the environment as usual. So precedence is flag > environment > file > built-in default, clap
//! reports a bad value from any layer with its usual message, and the whole configuration is one typed
//! struct before any runtime or thread starts. Nothing is written to the process environment.
use std::ffi::{OsStr, OsString};
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

/// Parses the settings `T` of this process: its command line, its environment, and the config file named by
/// `--config FILE`, `--config=FILE` or `SLUICE_CONFIG`. A bad flag or value exits with clap's message (as
/// `T::parse()` does); a config file that cannot be read, or has an unknown key, is an error.
pub fn parse_with_config_file<T: clap::Parser>() -> Result<T, ConfigError> {
    parse_from_with_config_file(std::env::args_os())
}

/// [`parse_with_config_file`] with the given command line (its first item is the program's name).
pub fn parse_from_with_config_file<T: clap::Parser>(
    args: impl IntoIterator<Item = OsString>,
) -> Result<T, ConfigError> {
    let args: Vec<OsString> = args.into_iter().collect();
    let command = command_with_config_file(T::command(), &args)?;
    let matches = command.get_matches_from(args);
    Ok(T::from_arg_matches(&matches).unwrap_or_else(|e| e.exit()))
}

/// `command` with the config file's values (if a file is named) as its arguments' defaults.
fn command_with_config_file(mut command: clap::Command, args: &[OsString]) -> Result<clap::Command, ConfigError> {
    let named = config_path_from_args(args.iter().map(|a| a.to_string_lossy().into_owned()));
    let Some(path) = named.or_else(|| std::env::var_os("SLUICE_CONFIG").map(PathBuf::from)) else {
        return Ok(command);
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
    for (env_name, value) in config_assignments(&command, &path, &text)? {
        let id = command.get_arguments().find(|arg| arg.get_env() == Some(OsStr::new(&env_name))).map(|a| a.get_id());
        // Every assignment names an argument of this command (config_assignments checked each key).
        let Some(id) = id.map(|id| id.to_string()) else { continue };
        // clap keeps defaults as `'static` text. A process reads its config file once, at start: the few
        // leaked bytes are the configuration itself, alive for the whole process anyway.
        let value: &'static str = Box::leak(value.into_boxed_str());
        command = command.mut_arg(id, |arg| arg.default_value(value));
    }
    Ok(command)
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

    #[derive(clap::Parser, Debug, PartialEq)]
    struct Settings {
        #[arg(long, env = "SLUICE_TEST_CONFIG_REST_ADDR", default_value = "127.0.0.1:8081")]
        rest_addr: String,
        #[arg(long, env = "SLUICE_TEST_CONFIG_SLOTS", default_value_t = 1)]
        slots: u32,
        #[arg(long, env = "SLUICE_TEST_CONFIG_FILE")]
        config: Option<PathBuf>,
    }

    /// Flags beat the file, the file beats the built-in defaults, and a bad value in the file is refused by
    /// clap like a bad flag (here through the typed error path: `try_get_matches_from`).
    #[test]
    fn a_config_file_sets_defaults_under_the_flags() -> Result<(), Box<dyn std::error::Error>> {
        use clap::{CommandFactory, FromArgMatches};
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("sluice.toml");
        std::fs::write(&file, "rest_addr = \"127.0.0.1:9\"\nslots = 4\n")?;
        let args = |extra: &[&str]| {
            let mut args: Vec<OsString> = vec!["bin".into(), "--config".into(), file.clone().into()];
            args.extend(extra.iter().map(OsString::from));
            args
        };
        let parse = |args: Vec<OsString>| -> Result<Settings, Box<dyn std::error::Error>> {
            let matches = command_with_config_file(Settings::command(), &args)?.try_get_matches_from(args)?;
            Ok(Settings::from_arg_matches(&matches)?)
        };
        let from_file = parse(args(&[]))?;
        assert_eq!((from_file.rest_addr.as_str(), from_file.slots), ("127.0.0.1:9", 4));
        let flagged = parse(args(&["--slots", "2"]))?;
        assert_eq!((flagged.rest_addr.as_str(), flagged.slots), ("127.0.0.1:9", 2));
        std::fs::write(&file, "slots = \"many\"\n")?;
        let refused = parse(args(&[])).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused.contains("many"), "{refused}");
        let default = parse(vec!["bin".into()])?;
        assert_eq!((default.rest_addr.as_str(), default.slots), ("127.0.0.1:8081", 1));
        Ok(())
    }

    #[test]
    fn the_config_flag_is_found_in_both_spellings() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>().into_iter();
        assert_eq!(config_path_from_args(args(&["bin", "--config", "a.toml"])), Some("a.toml".into()));
        assert_eq!(config_path_from_args(args(&["bin", "--config=b.toml"])), Some("b.toml".into()));
        assert_eq!(config_path_from_args(args(&["bin", "--slots", "2"])), None);
    }
}
