//! Jobs are confined: what a job file may read, write and reach is what the operator allows.
//!
//! A job runs with the TaskManager's rights, and a savepoint request with the JobManager's. So every place
//! where a job file or request names something outside the job is checked against the operator's settings
//! ([`ConfinementArgs`], the same flags on both processes):
//! - `file_source.path` must lie under an allowed input directory, `file_sink.path` under an allowed output
//!   directory, after resolving `..` and symlinks ([`paths`]);
//! - Kafka properties pass an allowlist; those naming a local file must name one under an input directory
//!   ([`kafka`]); `bootstrap_servers` optionally pass a host allowlist;
//! - savepoint and restore locations must lie under the checkpoint or savepoint location or an extra
//!   allowed prefix ([`targets`]).
//!
//! The JobManager checks at submission (a 400 naming the vertex and field, nothing stored); each TaskManager
//! checks again, with its own settings, before a source or sink opens anything (the task fails, nothing is
//! created), because a TaskManager cannot trust that the JobManager's settings match its own. Relative paths
//! resolve against each process's working directory, as opening them does.
//!
//! Secrets in job files (`sasl.password`, ...) go to the TaskManagers, which need them, and nowhere else:
//! [`redact_graph`] hides them in everything the REST API returns, and [`redact_text`] in error messages.
use std::fmt;
use std::path::{Path, PathBuf};

use crate::proto::{vertex::Operator, JobGraph, Vertex};

pub mod kafka;
pub mod paths;
pub mod targets;

use kafka::{PropertyClass, CA_LOCATION_PROBE};
use paths::{resolve, PathError, Roots};
use targets::SavepointTargets;

/// What shows in place of a secret.
pub const REDACTED: &str = "***";

/// The confinement flags, shared by the JobManager and the TaskManager (`#[command(flatten)]`).
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct ConfinementArgs {
    /// Directories jobs may read files from (file_source paths, Kafka certificate files), comma-separated;
    /// relative ones are under the working directory. Empty: none.
    #[arg(long, env = "ALLOWED_INPUT_DIRS", value_delimiter = ',', default_value = "examples,data")]
    pub allowed_input_dirs: Vec<String>,

    /// Directories jobs may write files into (file_sink paths), comma-separated; relative ones are under the
    /// working directory. Empty: none.
    #[arg(long, env = "ALLOWED_OUTPUT_DIRS", value_delimiter = ',', default_value = "data")]
    pub allowed_output_dirs: Vec<String>,

    /// Locations besides the checkpoint and savepoint locations where savepoints may be written and read
    /// (directories, `s3://bucket/prefix`, `gs://bucket/prefix`), comma-separated. JobManager only: a
    /// TaskManager writes where the JobManager tells it.
    #[arg(long, env = "ALLOWED_SAVEPOINT_PREFIXES", value_delimiter = ',')]
    pub allowed_savepoint_prefixes: Vec<String>,

    /// Kafka brokers jobs may connect to (`host` or `host:port`), comma-separated. Empty: any.
    #[arg(long, env = "ALLOWED_KAFKA_BROKERS", value_delimiter = ',')]
    pub allowed_kafka_brokers: Vec<String>,
}

/// Why something was refused; the label of the refusals metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RefusalReason {
    /// A file path outside the allowed directories.
    PathOutsideRoots,
    /// A Kafka property not on the allowlist (or naming a file outside the input directories).
    KafkaProperty,
    /// A Kafka broker not on the broker allowlist.
    KafkaBroker,
    /// A savepoint or restore location outside the allowed prefixes.
    SavepointTarget,
}

impl RefusalReason {
    /// Every reason (the labels a metric starts with).
    pub const ALL: [RefusalReason; 4] = [
        RefusalReason::PathOutsideRoots,
        RefusalReason::KafkaProperty,
        RefusalReason::KafkaBroker,
        RefusalReason::SavepointTarget,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::PathOutsideRoots => "path_outside_roots",
            RefusalReason::KafkaProperty => "kafka_property",
            RefusalReason::KafkaBroker => "kafka_broker",
            RefusalReason::SavepointTarget => "savepoint_target",
        }
    }
}

/// One thing refused: why, and a sentence naming the vertex and field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The class of refusal.
    pub reason: RefusalReason,
    /// `vertex 'src' (file_source): 'path' ...`.
    pub problem: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problem)
    }
}

/// The settings of [`ConfinementArgs`], resolved against the working directory at start.
#[derive(Clone, Debug, Default)]
pub struct Confinement {
    /// What relative paths resolve against: the process's working directory.
    base: PathBuf,
    inputs: Roots,
    outputs: Roots,
    savepoints: SavepointTargets,
    /// Lowercase `host` or `host:port`; empty: any broker.
    brokers: Vec<String>,
    /// Where the process keeps its own data (data directory, checkpoints, secrets, keys): never readable or
    /// writable by a job, even inside an allowed root (the default roots contain the default data dirs).
    protected: Vec<PathBuf>,
}

impl Confinement {
    /// Resolves `args` against the working directory. `savepoint_locations` are the locations savepoints go
    /// to anyway (the JobManager's checkpoint and savepoint locations), allowed besides the extra prefixes.
    pub fn from_args(args: &ConfinementArgs, savepoint_locations: &[String]) -> Result<Confinement, PathError> {
        let base = std::env::current_dir().map_err(|e| PathError(format!("cannot read the working directory: {e}")))?;
        Confinement::resolve(&base, args, savepoint_locations)
    }

    /// [`Confinement::from_args`] against `base` instead of the working directory.
    pub fn resolve(
        base: &Path,
        args: &ConfinementArgs,
        savepoint_locations: &[String],
    ) -> Result<Confinement, PathError> {
        let locations: Vec<String> =
            savepoint_locations.iter().chain(&args.allowed_savepoint_prefixes).cloned().collect();
        Ok(Confinement {
            base: base.to_path_buf(),
            inputs: Roots::resolve(base, &args.allowed_input_dirs)
                .map_err(|e| PathError(format!("--allowed-input-dirs: {e}")))?,
            outputs: Roots::resolve(base, &args.allowed_output_dirs)
                .map_err(|e| PathError(format!("--allowed-output-dirs: {e}")))?,
            savepoints: SavepointTargets::resolve(base, &locations)
                .map_err(|e| PathError(format!("--allowed-savepoint-prefixes: {e}")))?,
            brokers: args
                .allowed_kafka_brokers
                .iter()
                .map(|b| b.trim().to_ascii_lowercase())
                .filter(|b| !b.is_empty())
                .collect(),
            protected: Vec::new(),
        })
    }

    /// Adds paths no job may read or write, nor read a directory above: the process's data directory,
    /// checkpoint and savepoint directories, secret, token and key files. Paths that cannot be resolved
    /// (an `s3://` location) are skipped: jobs cannot name those as files anyway.
    pub fn protect<P: AsRef<Path>>(mut self, paths: impl IntoIterator<Item = P>) -> Confinement {
        for path in paths {
            if let Some(text) = path.as_ref().to_str().filter(|t| !t.contains("://")) {
                if let Ok(resolved) = resolve(&self.base, text) {
                    self.protected.push(resolved);
                }
            }
        }
        self
    }

    /// Refuses `resolved` if it lies in a protected path (or, for what a job reads, above one: a directory
    /// source reads what is in it).
    fn check_protected(&self, path: &str, resolved: &Path, reading: bool) -> Result<(), String> {
        let hit = self.protected.iter().find(|p| resolved.starts_with(p) || (reading && p.starts_with(resolved)));
        match hit {
            Some(protected) => Err(format!(
                "'{path}' reaches {}, where the cluster keeps its own data (metadata, state, secrets): jobs may \
                 never read or write there",
                protected.display()
            )),
            None => Ok(()),
        }
    }

    /// A file a job reads, resolved, if it lies under an allowed input directory.
    pub fn input_path(&self, path: &str) -> Result<PathBuf, String> {
        let resolved = self.under(&self.inputs, path, "input", "--allowed-input-dirs (ALLOWED_INPUT_DIRS)")?;
        self.check_protected(path, &resolved, true)?;
        Ok(resolved)
    }

    /// A directory a job writes into, resolved, if it lies under an allowed output directory.
    pub fn output_path(&self, path: &str) -> Result<PathBuf, String> {
        let resolved = self.under(&self.outputs, path, "output", "--allowed-output-dirs (ALLOWED_OUTPUT_DIRS)")?;
        self.check_protected(path, &resolved, false)?;
        Ok(resolved)
    }

    fn under(&self, roots: &Roots, path: &str, what: &str, flag: &str) -> Result<PathBuf, String> {
        let resolved = resolve(&self.base, path).map_err(|e| format!("'{path}' cannot be used: {e}"))?;
        if roots.contains(&resolved) {
            return Ok(resolved);
        }
        let shown = if resolved.as_os_str() == path { String::new() } else { format!(" (= {})", resolved.display()) };
        Err(format!(
            "'{path}'{shown} is outside the allowed {what} directories ({}); an operator can allow more with {flag}",
            roots.describe()
        ))
    }

    /// Whether a savepoint may be written to or read from `location`.
    pub fn check_savepoint_target(&self, location: &str) -> Result<(), Refusal> {
        self.savepoints
            .check(&self.base, location)
            .map_err(|problem| Refusal { reason: RefusalReason::SavepointTarget, problem })
    }

    /// Everything `graph` names outside the job that the settings do not allow, one refusal per field.
    pub fn check_graph(&self, graph: &JobGraph) -> Vec<Refusal> {
        graph.vertices.iter().flat_map(|vertex| self.check_vertex(vertex)).collect()
    }

    /// What `vertex` names outside the job that the settings do not allow: its paths, Kafka properties and
    /// brokers.
    pub fn check_vertex(&self, vertex: &Vertex) -> Vec<Refusal> {
        let mut refusals = Vec::new();
        let Some(operator) = vertex.operator.as_ref() else { return refusals };
        let kind = crate::job::operator_kind(operator);
        let mut refuse = |reason: RefusalReason, problem: String| {
            refusals.push(Refusal { reason, problem: format!("vertex '{}' ({kind}): {problem}", vertex.id) });
        };
        match operator {
            Operator::FileSource(source) => {
                if let Err(e) = self.input_path(&source.path) {
                    refuse(RefusalReason::PathOutsideRoots, format!("path {e}"));
                }
            }
            Operator::FileSink(sink) => {
                if let Err(e) = self.output_path(&sink.path) {
                    refuse(RefusalReason::PathOutsideRoots, format!("path {e}"));
                }
            }
            Operator::KafkaSource(source) => {
                let owned = crate::job::operators::SOURCE_OWNED_PROPERTIES;
                self.check_kafka(&source.bootstrap_servers, source.properties.iter(), owned, &mut refuse);
            }
            Operator::KafkaSink(sink) => {
                let owned = crate::job::operators::SINK_OWNED_PROPERTIES;
                self.check_kafka(&sink.bootstrap_servers, sink.properties.iter(), owned, &mut refuse);
            }
            _ => {}
        }
        refusals
    }

    fn check_kafka<'a>(
        &self,
        bootstrap_servers: &str,
        properties: impl Iterator<Item = (&'a String, &'a String)>,
        owned: &[&str],
        refuse: &mut dyn FnMut(RefusalReason, String),
    ) {
        for broker in bootstrap_servers.split(',').map(str::trim).filter(|b| !b.is_empty()) {
            if !self.broker_allowed(broker) {
                refuse(
                    RefusalReason::KafkaBroker,
                    format!(
                        "bootstrap_servers '{broker}' is not an allowed broker ({}); an operator can allow it with \
                         --allowed-kafka-brokers (ALLOWED_KAFKA_BROKERS)",
                        self.brokers.join(", ")
                    ),
                );
            }
        }
        let mut sorted: Vec<(&String, &String)> = properties.collect();
        sorted.sort();
        // The connector's own properties are refused by validation, naming the field to use instead; the
        // TaskManager validates every graph it is given, so they never reach a client either.
        for (name, value) in sorted.into_iter().filter(|(name, _)| !owned.contains(&name.as_str())) {
            match kafka::classify(name) {
                Err(why) => refuse(RefusalReason::KafkaProperty, format!("properties: '{name}' {why}")),
                Ok(PropertyClass::LocalFile) if name == "ssl.ca.location" && value == CA_LOCATION_PROBE => {}
                Ok(PropertyClass::LocalFile) => {
                    if let Err(e) = self.input_path(value) {
                        refuse(RefusalReason::KafkaProperty, format!("properties: '{name}' {e}"));
                    }
                }
                Ok(PropertyClass::Setting | PropertyClass::Secret) => {}
            }
        }
    }

    /// Whether `broker` (`host:port`, maybe with a `scheme://`) may be reached: any when no allowlist is set,
    /// else when its host or host:port is listed.
    fn broker_allowed(&self, broker: &str) -> bool {
        if self.brokers.is_empty() {
            return true;
        }
        let address = broker.rsplit("://").next().unwrap_or(broker).to_ascii_lowercase();
        let host = match address.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => address.as_str(),
        };
        self.brokers.iter().any(|allowed| *allowed == address || allowed == host)
    }
}

/// `graph` with the value of every secret Kafka property replaced by [`REDACTED`].
pub fn redact_graph(mut graph: JobGraph) -> JobGraph {
    for vertex in &mut graph.vertices {
        let properties = match vertex.operator.as_mut() {
            Some(Operator::KafkaSource(source)) => &mut source.properties,
            Some(Operator::KafkaSink(sink)) => &mut sink.properties,
            _ => continue,
        };
        for (name, value) in properties.iter_mut() {
            if kafka::is_secret_property(name) {
                *value = REDACTED.to_string();
            }
        }
    }
    graph
}

/// `text` (an error message) with the value of every secret among `properties` replaced by [`REDACTED`]:
/// a client library may quote a value it refuses.
pub fn redact_text<K: AsRef<str>, V: AsRef<str>>(text: &str, properties: impl IntoIterator<Item = (K, V)>) -> String {
    let mut text = text.to_string();
    for (name, value) in properties {
        let value = value.as_ref();
        if kafka::is_secret_property(name.as_ref()) && !value.is_empty() {
            text = text.replace(value, REDACTED);
        }
    }
    text
}

#[cfg(test)]
mod tests;
