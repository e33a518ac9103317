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
    Ok(load_from_args::<T>(args)?.settings)
}

/// The settings of this process, as [`parse_with_config_file`] reads them, with where each value came from
/// (what `--check-config` prints).
pub fn load_with_config_file<T: clap::Parser>() -> Result<Loaded<T>, ConfigError> {
    load_from_args(std::env::args_os())
}

/// [`load_with_config_file`] with the given command line (its first item is the program's name).
pub fn load_from_args<T: clap::Parser>(args: impl IntoIterator<Item = OsString>) -> Result<Loaded<T>, ConfigError> {
    let args: Vec<OsString> = args.into_iter().collect();
    let with_file = command_with_config_file(T::command(), &args)?;
    let matches = with_file.command.clone().get_matches_from(args);
    let settings = T::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let effective = EffectiveConfig::new(&with_file, &matches);
    Ok(Loaded { settings, effective })
}

/// A command whose arguments' defaults are a config file's values.
struct CommandWithFile {
    command: clap::Command,
    /// The config file read, if any.
    path: Option<PathBuf>,
    /// The ids of the arguments the file set.
    from_file: Vec<String>,
}

/// `command` with the config file's values (if a file is named) as its arguments' defaults.
fn command_with_config_file(mut command: clap::Command, args: &[OsString]) -> Result<CommandWithFile, ConfigError> {
    let named = config_path_from_args(args.iter().map(|a| a.to_string_lossy().into_owned()));
    let Some(path) = named.or_else(|| std::env::var_os("SLUICE_CONFIG").map(PathBuf::from)) else {
        return Ok(CommandWithFile { command, path: None, from_file: Vec::new() });
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
    let mut from_file = Vec::new();
    for (env_name, value) in config_assignments(&command, &path, &text)? {
        let id = command.get_arguments().find(|arg| arg.get_env() == Some(OsStr::new(&env_name))).map(|a| a.get_id());
        // Every assignment names an argument of this command (config_assignments checked each key).
        let Some(id) = id.map(|id| id.to_string()) else { continue };
        // clap keeps defaults as `'static` text. A process reads its config file once, at start: the few
        // leaked bytes are the configuration itself, alive for the whole process anyway.
        let value: &'static str = Box::leak(value.into_boxed_str());
        command = command.mut_arg(&id, |arg| arg.default_value(value));
        from_file.push(id);
    }
    Ok(CommandWithFile { command, path: Some(path), from_file })
}

/// Typed settings with the effective configuration they were read from.
pub struct Loaded<T> {
    /// The typed settings.
    pub settings: T,
    /// Every setting's value and where it came from, secrets masked.
    pub effective: EffectiveConfig,
}

/// Where a setting's value came from, in the order of precedence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag.
    Flag,
    /// The setting's environment variable.
    Environment,
    /// The config file.
    File,
    /// The built-in default.
    Default,
    /// Not set, and no default.
    Unset,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Flag => "flag",
            Source::Environment => "env",
            Source::File => "file",
            Source::Default => "default",
            Source::Unset => "unset",
        }
    }
}

/// One setting as it is in effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectiveSetting {
    /// The flag's long name, which is also the config file's key.
    pub key: String,
    /// The environment variable.
    pub env: String,
    /// The value (several joined with commas), secrets masked; `None` when unset.
    pub value: Option<String>,
    /// Where the value came from.
    pub source: Source,
}

/// Every setting of a process as it is in effect, printable as a config file: `key = "value"  # source (ENV)`.
/// Secrets never appear: values of settings whose environment values are hidden (tokens) print as `***`, and a
/// password in any URL (`postgres://user:password@host/db`) prints as `***`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectiveConfig {
    /// The config file read, if any.
    pub file: Option<PathBuf>,
    /// The settings, in the order the command declares them.
    pub settings: Vec<EffectiveSetting>,
}

/// What a masked secret prints as.
pub const MASKED: &str = "***";

impl EffectiveConfig {
    fn new(with_file: &CommandWithFile, matches: &clap::ArgMatches) -> Self {
        let mut settings = Vec::new();
        for arg in with_file.command.get_arguments() {
            let (Some(long), Some(env)) = (arg.get_long(), arg.get_env().and_then(OsStr::to_str)) else { continue };
            if long == "config" {
                continue;
            }
            let id = arg.get_id().as_str();
            let raw: Option<Vec<String>> =
                matches.get_raw(id).map(|values| values.map(|v| v.to_string_lossy().into_owned()).collect());
            let source = match (raw.is_some(), matches.value_source(id)) {
                (false, _) | (true, None) => Source::Unset,
                (true, Some(clap::parser::ValueSource::CommandLine)) => Source::Flag,
                (true, Some(clap::parser::ValueSource::EnvVariable)) => Source::Environment,
                (true, Some(_)) if with_file.from_file.iter().any(|f| f == id) => Source::File,
                (true, Some(_)) => Source::Default,
            };
            let value = raw.map(|values| mask(&values.join(","), arg.is_hide_env_values_set()));
            settings.push(EffectiveSetting { key: long.to_string(), env: env.to_string(), value, source });
        }
        EffectiveConfig { file: with_file.path.clone(), settings }
    }
}

impl std::fmt::Display for EffectiveConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.file {
            Some(path) => writeln!(f, "# effective configuration (flag > env > file {} > default)", path.display())?,
            None => writeln!(f, "# effective configuration (flag > env > default; no config file)")?,
        }
        for setting in &self.settings {
            match &setting.value {
                Some(value) => writeln!(
                    f,
                    "{} = {}  # {} ({})",
                    setting.key,
                    toml::Value::String(value.clone()),
                    setting.source.name(),
                    setting.env
                )?,
                None => writeln!(f, "# {} unset ({})", setting.key, setting.env)?,
            }
        }
        Ok(())
    }
}

/// What `--check-config` does once the settings are parsed: prints the effective configuration to stdout and
/// each problem to stderr, and returns the exit code (0 valid, 1 with problems).
pub fn print_check(effective: &EffectiveConfig, problems: &[String]) -> i32 {
    print!("{effective}");
    for problem in problems {
        eprintln!("invalid configuration: {problem}");
    }
    i32::from(!problems.is_empty())
}

/// `value` with its secrets masked: the password of any URL in it; and when `secret`, a URL's query (which may
/// carry `?password=`) or, for anything but a URL, all of it.
fn mask(value: &str, secret: bool) -> String {
    if secret && !value.contains("://") {
        return MASKED.to_string();
    }
    let masked = value.split(',').map(mask_url_password).collect::<Vec<_>>().join(",");
    match masked.split_once('?') {
        Some((before, _)) if secret => format!("{before}?{MASKED}"),
        _ => masked,
    }
}

/// `scheme://user:password@host...` with the password replaced by [`MASKED`]; anything else unchanged.
pub fn mask_url_password(value: &str) -> String {
    let Some(scheme_end) = value.find("://") else { return value.to_string() };
    let rest = &value[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    // The last '@' ends the user information (a password may itself contain '@' when not percent-encoded).
    let Some(at) = authority.rfind('@') else { return value.to_string() };
    let Some(colon) = authority[..at].find(':') else { return value.to_string() };
    format!("{}{}:{MASKED}{}", &value[..scheme_end + 3], &authority[..colon], &value[scheme_end + 3 + at..])
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

/// What `--check-config` finds wrong with an address setting `key` = `value` (`host:port`, the port a number
/// that fits 16 bits; the host a name or an IP, bracketed for IPv6), or `None`. The host is not resolved: the
/// check runs where the process will not (a CI job validating manifests).
pub fn host_port_problem(key: &str, value: &str) -> Option<String> {
    if value.parse::<std::net::SocketAddr>().is_ok() {
        return None;
    }
    let Some((host, port)) = value.rsplit_once(':') else {
        return Some(format!("{key} '{value}' is not host:port"));
    };
    if port.parse::<u16>().is_err() {
        return Some(format!("{key} '{value}': the port '{port}' is not a number from 0 to 65535"));
    }
    let name_ok = !host.is_empty()
        && !host.contains(':')
        && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    (!name_ok).then(|| format!("{key} '{value}': '{host}' is neither an IP address nor a host name"))
}

/// What `--check-config` finds wrong with a checkpoint or savepoint location setting, or `None`: a directory,
/// `file://dir`, or `s3://bucket/prefix` (`s3a://`), `gs://bucket/prefix`. Nothing is opened.
pub fn storage_location_problem(key: &str, value: &str) -> Option<String> {
    let value = value.trim();
    let (scheme, rest) = value.split_once("://")?;
    if !matches!(scheme, "file" | "s3" | "s3a" | "gs") {
        return Some(format!(
            "{key} '{value}': unsupported scheme '{scheme}' (use a directory, file://, s3:// or gs://)"
        ));
    }
    let bucket = rest.split('/').next().unwrap_or_default();
    (scheme != "file" && bucket.is_empty())
        .then(|| format!("{key} '{value}' names no bucket (expected {scheme}://bucket/prefix)"))
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
            let matches = command_with_config_file(Settings::command(), &args)?.command.try_get_matches_from(args)?;
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

    #[derive(clap::Parser, Debug)]
    struct Secrets {
        #[arg(long, env = "SLUICE_TEST_EFFECTIVE_REST_ADDR", default_value = "127.0.0.1:8081")]
        rest_addr: String,
        #[arg(long, env = "SLUICE_TEST_EFFECTIVE_SLOTS", default_value_t = 1)]
        slots: u32,
        #[arg(long, env = "SLUICE_TEST_EFFECTIVE_DIRS", value_delimiter = ',', default_value = "examples,data")]
        dirs: Vec<String>,
        #[arg(long, env = "SLUICE_TEST_EFFECTIVE_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        #[arg(long, env = "SLUICE_TEST_EFFECTIVE_TOKENS", hide_env_values = true)]
        tokens: Option<String>,
        #[arg(long, env = "SLUICE_TEST_EFFECTIVE_ID")]
        id: Option<String>,
        #[arg(long, env = "SLUICE_TEST_EFFECTIVE_INSECURE")]
        insecure: bool,
        #[arg(long, env = "SLUICE_TEST_EFFECTIVE_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long)]
        check_config: bool,
    }

    fn setting<'a>(effective: &'a EffectiveConfig, key: &str) -> Option<&'a EffectiveSetting> {
        effective.settings.iter().find(|s| s.key == key)
    }

    /// Goal: `--check-config` names the layer each value came from and never prints a secret. Method: one
    /// setting from each layer (the environment variable is unique to this test), a token and a database
    /// password among them.
    #[test]
    fn the_effective_configuration_names_each_source_and_masks_secrets() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("sluice.toml");
        std::fs::write(&file, "slots = 4\ndatabase-url = \"postgres://sluice:hunter2@db:5432/sluice\"\n")?;
        std::env::set_var("SLUICE_TEST_EFFECTIVE_ID", "tm-env");
        let args: Vec<OsString> =
            ["bin", "--config", &file.display().to_string(), "--tokens", "s3cr3t", "--check-config", "--insecure"]
                .iter()
                .map(OsString::from)
                .collect();
        let loaded = load_from_args::<Secrets>(args)?;
        let effective = &loaded.effective;
        assert_eq!(loaded.settings.slots, 4);
        assert!(loaded.settings.check_config);
        let source = |key| setting(effective, key).map(|s| s.source);
        let value = |key| setting(effective, key).and_then(|s| s.value.clone());
        assert_eq!(source("slots"), Some(Source::File));
        assert_eq!(source("rest-addr"), Some(Source::Default));
        assert_eq!(source("id"), Some(Source::Environment));
        assert_eq!(source("tokens"), Some(Source::Flag));
        assert_eq!(source("insecure"), Some(Source::Flag));
        assert_eq!(value("insecure").as_deref(), Some("true"));
        assert_eq!(value("dirs").as_deref(), Some("examples,data"));
        assert_eq!(value("tokens").as_deref(), Some(MASKED));
        assert_eq!(value("database-url").as_deref(), Some("postgres://sluice:***@db:5432/sluice"));
        assert!(setting(effective, "config").is_none(), "the config file is the header, not a setting");
        assert!(setting(effective, "check-config").is_none(), "a flag without a variable is not a setting");
        let printed = effective.to_string();
        assert!(!printed.contains("hunter2") && !printed.contains("s3cr3t"), "{printed}");
        assert!(printed.contains("slots = \"4\"  # file (SLUICE_TEST_EFFECTIVE_SLOTS)"), "{printed}");
        Ok(())
    }

    /// The printed configuration is itself a config file this process accepts (secrets aside).
    #[test]
    fn the_printed_configuration_reads_back_as_a_config_file() -> Result<(), Box<dyn std::error::Error>> {
        use clap::CommandFactory;
        let loaded = load_from_args::<Secrets>(vec![OsString::from("bin"), "--slots".into(), "3".into()])?;
        let printed = loaded.effective.to_string();
        let assignments = config_assignments(&Secrets::command(), Path::new("printed.toml"), &printed)?;
        assert!(assignments.contains(&("SLUICE_TEST_EFFECTIVE_SLOTS".into(), "3".into())), "{assignments:?}");
        assert_eq!(loaded.effective.settings.iter().find(|s| s.key == "tokens").map(|s| s.source), Some(Source::Unset));
        Ok(())
    }

    #[test]
    fn addresses_and_locations_are_checked_without_resolving_or_opening_them() {
        for good in ["0.0.0.0:6123", "[::]:8081", "sluice-jobmanager-rpc:6123", "jm.sluice.svc.cluster.local:6123"] {
            assert_eq!(host_port_problem("RPC_ADDR", good), None, "{good}");
        }
        for bad in ["6123", "host:port", "host:70000", ":6123", "a b:1"] {
            assert!(host_port_problem("RPC_ADDR", bad).is_some_and(|p| p.contains("RPC_ADDR")), "{bad}");
        }
        for good in ["/var/lib/sluice", "data/checkpoints", "s3://b/p", "s3a://b", "gs://b/p", "file:///x"] {
            assert_eq!(storage_location_problem("CHECKPOINT_DIR", good), None, "{good}");
        }
        let refused = storage_location_problem("CHECKPOINT_DIR", "hdfs://nn/x").unwrap_or_default();
        assert!(refused.contains("unsupported scheme 'hdfs'"), "{refused}");
        assert!(storage_location_problem("CHECKPOINT_DIR", "gs:///p").is_some_and(|p| p.contains("no bucket")));
    }

    #[test]
    fn url_passwords_are_masked_and_other_values_are_not() {
        assert_eq!(mask_url_password("postgres://u:p@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(
            mask_url_password("postgres://u:p@ss@h/db?sslmode=require"),
            "postgres://u:***@h/db?sslmode=require"
        );
        assert_eq!(mask_url_password("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(mask_url_password("s3://bucket/a:b@c"), "s3://bucket/a:b@c");
        assert_eq!(mask_url_password("127.0.0.1:8081"), "127.0.0.1:8081");
        assert_eq!(mask("a,b", true), MASKED);
        assert_eq!(mask("postgres://u:p@h/db?password=q", true), "postgres://u:***@h/db?***");
    }

    #[test]
    fn the_config_flag_is_found_in_both_spellings() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>().into_iter();
        assert_eq!(config_path_from_args(args(&["bin", "--config", "a.toml"])), Some("a.toml".into()));
        assert_eq!(config_path_from_args(args(&["bin", "--config=b.toml"])), Some("b.toml".into()));
        assert_eq!(config_path_from_args(args(&["bin", "--slots", "2"])), None);
    }
}
