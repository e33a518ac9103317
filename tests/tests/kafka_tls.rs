//! Kafka over TLS: a job reads from and writes to a broker that accepts TLS connections only.
//!
//! Goal: with `security.protocol=ssl` and the CA in `ssl.ca.location` (under an allowed input root), the Kafka
//! source and sink reach a broker that accepts TLS connections only, and every record arrives. This is what
//! managed Kafka (MSK, Confluent Cloud) needs of librdkafka.
//!
//! Method: nisshi started with a certificate from `scripts/gen-certs.sh`; a real cluster; the broker's own
//! clients use TLS too.
use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use sluice_tests::cluster::make_certificates;
use sluice_tests::kafka::KafkaBroker;
use sluice_tests::{Cluster, ClusterSpec, JobStatus};

const TIMEOUT: Duration = Duration::from_secs(90);
const RECORDS: u64 = 500;

fn job(broker: &KafkaBroker, properties: &Value) -> Value {
    json!({
        "name": "kafka_tls",
        "vertices": [
            {"id": "in", "parallelism": 1, "kafka_source": {
                "bootstrap_servers": broker.bootstrap_servers(), "topics": ["in"], "format": "JSON",
                "schema": [{"name": "id", "type": "INT64"}], "properties": properties}},
            {"id": "out", "parallelism": 1, "kafka_sink": {
                "bootstrap_servers": broker.bootstrap_servers(), "topic": "out", "format": "JSON",
                "properties": properties}}
        ],
        "edges": [{"from": "in", "to": "out"}]
    })
}

#[test]
fn a_job_reads_and_writes_a_tls_only_broker() {
    let mut cluster = Cluster::start(ClusterSpec { task_managers: 1, ..ClusterSpec::default() });
    // In the cluster's directory: an allowed input root of the test clusters, so ssl.ca.location may name it.
    let certs = make_certificates(cluster.dir()).unwrap_or_else(|e| panic!("{e:#}"));
    let broker = KafkaBroker::start_tls(&certs.join("node.pem"), &certs.join("node.key"), &certs.join("ca.pem"))
        .unwrap_or_else(|e| panic!("{e:#}"));
    for topic in ["in", "out"] {
        broker.create_topic(topic, 2).unwrap_or_else(|e| panic!("{e:#}"));
    }
    let values: Vec<String> = (0..RECORDS).map(|i| json!({"id": i}).to_string()).collect();
    broker.produce("in", 2, &values, |_| None).unwrap_or_else(|e| panic!("{e:#}"));

    let properties: serde_json::Map<String, Value> =
        broker.client_properties().into_iter().map(|(k, v)| (k, Value::String(v))).collect();
    let id = cluster.submit_json(&job(&broker, &Value::Object(properties)));
    let records = broker
        .read_all("out", TIMEOUT, |records| records.len() >= RECORDS as usize)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let ids: BTreeSet<u64> = records
        .iter()
        .filter_map(|r| serde_json::from_slice::<Value>(&r.value).ok())
        .filter_map(|row| row["id"].as_u64())
        .collect();
    assert_eq!(ids, (0..RECORDS).collect::<BTreeSet<u64>>(), "every record went through TLS both ways");
    cluster.cancel(&id);
    cluster.wait_for_status(&id, JobStatus::Canceled, TIMEOUT);
}
