//! Which librdkafka properties a job file may set: an allowlist, because librdkafka's surface is large and
//! grows (a denylist would let through whatever the next release adds), and several of its properties run
//! code or read files as the TaskManager: `plugin.library.paths` and `ssl.engine.location` load shared
//! libraries, `sasl.kerberos.kinit.cmd` is a shell command (and `sasl.kerberos.principal` and `.keytab` are
//! pasted into it unquoted), `ssl.providers` loads OpenSSL modules, and `sasl.oauthbearer.metadata.
//! authentication.type` fetches the TaskManager's own cloud identity.
//!
//! Every property falls in one of these classes (the names are librdkafka's, CONFIGURATION.md, v2.x):
//! - a [`PropertyClass::Setting`]: sizes, timeouts, protocol choices; passed through;
//! - a [`PropertyClass::Secret`]: a password or key, passed through and never shown (see
//!   [`is_secret_property`]);
//! - a [`PropertyClass::LocalFile`]: a file the client reads (certificates, keys); allowed only under an
//!   allowed input directory, checked like a `file_source` path;
//! - anything else is refused, with the reason when it is a known danger.
//!
//! The properties the connectors set themselves (`bootstrap.servers`, `group.id`, `transactional.id`, ...)
//! are refused by validation with a pointer to the field that sets them.

/// What a job may do with a Kafka property.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PropertyClass {
    /// Passed through as it is.
    Setting,
    /// Passed through; its value is shown as `***` everywhere.
    Secret,
    /// A local file the client reads: allowed under an allowed input directory only.
    LocalFile,
}

/// Known-safe settings of the consumer, the producer, or both.
const SETTINGS: &[&str] = &[
    // Client and connection.
    "client.id",
    "client.rack",
    "client.dns.lookup",
    "message.max.bytes",
    "message.copy.max.bytes",
    "receive.message.max.bytes",
    "max.in.flight.requests.per.connection",
    "max.in.flight",
    "metadata.max.age.ms",
    "metadata.recovery.strategy",
    "metadata.recovery.rebootstrap.trigger.ms",
    "topic.metadata.refresh.interval.ms",
    "topic.metadata.refresh.fast.interval.ms",
    "topic.metadata.refresh.sparse",
    "topic.metadata.propagation.max.ms",
    "socket.timeout.ms",
    "socket.send.buffer.bytes",
    "socket.receive.buffer.bytes",
    "socket.keepalive.enable",
    "socket.nagle.disable",
    "socket.max.fails",
    "socket.connection.setup.timeout.ms",
    "broker.address.ttl",
    "broker.address.family",
    "connections.max.idle.ms",
    "reconnect.backoff.ms",
    "reconnect.backoff.max.ms",
    "retry.backoff.ms",
    "retry.backoff.max.ms",
    "api.version.request.timeout.ms",
    "allow.auto.create.topics",
    "enable.metrics.push",
    "log_level",
    // TLS, without files.
    "security.protocol",
    "ssl.cipher.suites",
    "ssl.curves.list",
    "ssl.sigalgs.list",
    "ssl.certificate.pem",
    "ssl.ca.pem",
    "https.ca.pem",
    "enable.ssl.certificate.verification",
    "ssl.endpoint.identification.algorithm",
    // SASL: PLAIN, SCRAM and OAUTHBEARER (OIDC). Not GSSAPI: Kerberos needs the kinit shell command.
    "sasl.mechanisms",
    "sasl.mechanism",
    "sasl.username",
    "sasl.kerberos.service.name",
    "enable.sasl.oauthbearer.unsecure.jwt",
    "sasl.oauthbearer.method",
    "sasl.oauthbearer.client.id",
    "sasl.oauthbearer.client.credentials.client.id",
    "sasl.oauthbearer.scope",
    "sasl.oauthbearer.extensions",
    "sasl.oauthbearer.token.endpoint.url",
    "sasl.oauthbearer.grant.type",
    "sasl.oauthbearer.assertion.algorithm",
    "sasl.oauthbearer.assertion.claim.aud",
    "sasl.oauthbearer.assertion.claim.exp.seconds",
    "sasl.oauthbearer.assertion.claim.iss",
    "sasl.oauthbearer.assertion.claim.jti.include",
    "sasl.oauthbearer.assertion.claim.nbf.seconds",
    "sasl.oauthbearer.assertion.claim.sub",
    // Consumer.
    "group.instance.id",
    "partition.assignment.strategy",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "group.protocol",
    "group.remote.assignor",
    "coordinator.query.interval.ms",
    "max.poll.interval.ms",
    "auto.commit.interval.ms",
    "queued.min.messages",
    "queued.max.messages.kbytes",
    "fetch.wait.max.ms",
    "fetch.queue.backoff.ms",
    "fetch.message.max.bytes",
    "max.partition.fetch.bytes",
    "fetch.max.bytes",
    "fetch.min.bytes",
    "fetch.error.backoff.ms",
    "isolation.level",
    "check.crcs",
    "auto.offset.reset",
    // Producer.
    "enable.idempotence",
    "enable.gapless.guarantee",
    "queue.buffering.max.messages",
    "queue.buffering.max.kbytes",
    "queue.buffering.max.ms",
    "linger.ms",
    "message.send.max.retries",
    "retries",
    "queue.buffering.backpressure.threshold",
    "compression.codec",
    "compression.type",
    "compression.level",
    "batch.num.messages",
    "batch.size",
    "sticky.partitioning.linger.ms",
    "request.required.acks",
    "acks",
    "request.timeout.ms",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "partitioner",
];

/// Secrets that may be set (passed through, shown as `***`).
const SECRETS: &[&str] = &[
    "sasl.password",
    "ssl.key.password",
    "ssl.key.pem",
    "ssl.keystore.password",
    "sasl.oauthbearer.config",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.client.credentials.client.secret",
    "sasl.oauthbearer.assertion.private.key.passphrase",
    "sasl.oauthbearer.assertion.private.key.pem",
];

/// Files the client reads: allowed under an allowed input directory.
const LOCAL_FILES: &[&str] = &[
    "ssl.key.location",
    "ssl.certificate.location",
    "ssl.ca.location",
    "ssl.crl.location",
    "ssl.keystore.location",
    "https.ca.location",
    "sasl.oauthbearer.assertion.private.key.file",
    "sasl.oauthbearer.assertion.file",
    "sasl.oauthbearer.assertion.jwt.template.file",
];

/// Known dangers, refused with the reason.
const DANGERS: &[(&str, &str)] = &[
    ("plugin.library.paths", "it loads shared libraries into the TaskManager"),
    ("ssl.engine.location", "it loads an OpenSSL engine library into the TaskManager"),
    ("ssl.engine.id", "it selects an OpenSSL engine to load"),
    ("ssl.providers", "it loads OpenSSL provider modules into the TaskManager"),
    ("sasl.kerberos.kinit.cmd", "it is a shell command the TaskManager runs"),
    ("sasl.kerberos.keytab", "it is pasted into the Kerberos shell command"),
    ("sasl.kerberos.principal", "it is pasted unquoted into the Kerberos shell command"),
    ("sasl.kerberos.min.time.before.relogin", "it runs the Kerberos shell command periodically"),
    ("sasl.oauthbearer.metadata.authentication.type", "it authenticates with the TaskManager's own cloud identity"),
    ("offset.store.path", "it writes offsets to a local file"),
    ("offset.store.method", "it can write offsets to a local file"),
    ("debug", "it floods the TaskManager's log and can print connection secrets"),
    ("metadata.broker.list", "it sets the brokers: use the 'bootstrap_servers' field"),
];

/// The value of `ssl.ca.location` that probes the system's standard CA locations rather than naming a file.
pub const CA_LOCATION_PROBE: &str = "probe";

/// The class of property `name`, or why a job may not set it.
pub fn classify(name: &str) -> Result<PropertyClass, String> {
    if SETTINGS.contains(&name) {
        return Ok(PropertyClass::Setting);
    }
    if SECRETS.contains(&name) {
        return Ok(PropertyClass::Secret);
    }
    if LOCAL_FILES.contains(&name) {
        return Ok(PropertyClass::LocalFile);
    }
    if let Some((_, why)) = DANGERS.iter().find(|(danger, _)| *danger == name) {
        return Err(format!("is refused: {why}"));
    }
    let known = SETTINGS.iter().chain(SECRETS).chain(LOCAL_FILES).copied();
    let hint = crate::job::did_you_mean(name, known).map(|s| format!(" (did you mean '{s}'?)")).unwrap_or_default();
    Err(format!("is not among the Kafka properties a job may set{hint}; see docs/job-format.md"))
}

/// Words in a property's name that mark its value as a secret, whatever the property.
const SECRET_WORDS: &[&str] = &["password", "secret", "token", "passphrase", "jaas", "credential", "private", "pem"];

/// Whether a property's value is a secret: a known secret, or any name outside the known settings that
/// looks like one (`sasl.jaas.config`, `*password*`, `*token*`, ...), so that a property refused today, in
/// a job stored before, is hidden too.
pub fn is_secret_property(name: &str) -> bool {
    if SECRETS.contains(&name) {
        return true;
    }
    if SETTINGS.contains(&name) {
        return false;
    }
    let lower = name.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|word| lower.contains(word)) || lower.ends_with(".key")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_classes_do_not_overlap() {
        for name in SETTINGS {
            assert!(!SECRETS.contains(name) && !LOCAL_FILES.contains(name), "{name}");
            assert!(!DANGERS.iter().any(|(d, _)| d == name), "{name}");
        }
        for name in LOCAL_FILES.iter().chain(SECRETS) {
            assert!(!DANGERS.iter().any(|(d, _)| d == name), "{name}");
        }
        for name in SECRETS {
            assert!(is_secret_property(name), "{name}");
        }
    }

    #[test]
    fn code_loading_and_unknown_properties_are_refused_with_a_reason() {
        let refused = classify("plugin.library.paths").err().unwrap_or_default();
        assert!(refused.contains("loads shared libraries"), "{refused}");
        let unknown = classify("compresion.type").err().unwrap_or_default();
        assert!(unknown.contains("did you mean 'compression.type'"), "{unknown}");
        assert_eq!(classify("sasl.password"), Ok(PropertyClass::Secret));
        assert_eq!(classify("ssl.ca.location"), Ok(PropertyClass::LocalFile));
        assert_eq!(classify("linger.ms"), Ok(PropertyClass::Setting));
    }

    #[test]
    fn names_that_look_secret_are_secret() {
        for name in ["sasl.jaas.config", "my.api.token", "ssl.truststore.password", "foo.secret.x"] {
            assert!(is_secret_property(name), "{name}");
        }
        for name in ["sasl.username", "linger.ms", "ssl.key.location", "ssl.certificate.pem", "ssl.ca.pem"] {
            assert!(!is_secret_property(name), "{name}");
        }
    }
}
