//! TLS on all three transports, and plaintext refused once it is on.
//!
//! Goal: with `--tls on` (certificates from `scripts/gen-certs.sh`, as the README says), a job whose records
//! cross the data port between two TaskManagers runs to the end, REST answers over https (the CLI too, with
//! `SLUICE_CA_FILE`), and a plaintext client of each transport (REST, gRPC, the data port) is refused.
//!
//! Method: a real cluster with TLS on every process; plaintext clients written here.
use std::io::{Read, Write};
use std::time::Duration;

use serde_json::json;
use sluice_common::proto::job_manager_service_client::JobManagerServiceClient;
use sluice_common::proto::HeartbeatRequest;
use sluice_tests::prometheus::sum;
use sluice_tests::wait::{poll_until, Progress};
use sluice_tests::{Cluster, ClusterSpec, JobStatus};

const TIMEOUT: Duration = Duration::from_secs(120);
const ROWS: u64 = 20_000;
/// How long the plaintext hello waits for an answer: longer than the data port's 10 s handshake timeout, so the
/// port has closed the connection (and counted the refusal) before the read gives up.
const HANDSHAKE_ANSWER_WAIT: Duration = Duration::from_secs(20);

#[test]
fn a_job_runs_across_task_managers_over_tls_and_plaintext_is_refused_on_every_transport() {
    let mut cluster = Cluster::start(ClusterSpec { task_managers: 2, slots: 1, tls: true, ..ClusterSpec::default() });
    assert!(cluster.rest_url().starts_with("https://"));

    // Parallelism 2 on two one-slot TaskManagers: the rebalance sends rows both ways over the data port.
    let job = json!({
        "name": "tls",
        "vertices": [
            {"id": "gen", "parallelism": 2, "datagen": {"seed": 3, "rows": ROWS, "columns": [{"name": "n", "sequence": {"start": 0}}]}},
            {"id": "sink", "parallelism": 2, "blackhole_sink": {}}
        ],
        "edges": [{"from": "gen", "to": "sink", "partitioning": "REBALANCE"}]
    });
    let id = cluster.submit_json(&job);
    cluster.wait_for_status(&id, JobStatus::Finished, TIMEOUT);
    let metrics = cluster.job_metrics(&id);
    let sink = metrics["vertices"]
        .as_array()
        .and_then(|vertices| vertices.iter().find(|v| v["id"] == "sink"))
        .unwrap_or_else(|| panic!("no sink in {metrics}"));
    assert_eq!(sink["records_in"].as_u64(), Some(ROWS), "{metrics}");
    assert!(metrics["remote_bytes_in"].as_u64().is_some_and(|b| b > 0), "rows crossed the data port: {metrics}");

    let listed = cluster.cli(&["list"]);
    assert!(listed.status.success(), "sluice list over https: {}", listed.stderr);
    assert!(listed.stdout.contains(&id.0), "{}", listed.stdout);

    // REST: a plaintext request is not answered as HTTP.
    let rest = cluster.rest_url().replace("https://", "");
    let plain =
        reqwest::blocking::Client::new().get(format!("http://{rest}/health")).timeout(Duration::from_secs(10)).send();
    assert!(plain.is_err() || plain.is_ok_and(|r| !r.status().is_success()), "plaintext REST must fail");

    // gRPC: a plaintext call to the JobManager fails, though it carries the cluster secret (a plaintext
    // JobManager would answer it).
    let secret_file = cluster.dir().join("jobmanager").join("cluster.secret");
    let secret = std::fs::read_to_string(&secret_file).unwrap_or_else(|e| panic!("{e}")).trim().to_string();
    let rpc = format!("http://{}", cluster.rpc_address());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap_or_else(|e| panic!("{e}"));
    let plain_rpc = runtime.block_on(async {
        let mut client = JobManagerServiceClient::new(tonic::transport::Endpoint::from_shared(rpc)?.connect().await?);
        let mut heartbeat =
            tonic::Request::new(HeartbeatRequest { task_manager_id: "tm-x".into(), ..Default::default() });
        heartbeat.metadata_mut().insert("authorization", format!("Bearer {secret}").parse()?);
        client.heartbeat(heartbeat).await.map_err(anyhow::Error::from)?;
        anyhow::Ok(())
    });
    let error = plain_rpc.err().unwrap_or_else(|| panic!("a plaintext gRPC call was answered"));
    let status = error.downcast_ref::<tonic::Status>();
    assert!(status.is_none_or(|s| s.code() != tonic::Code::Unauthenticated), "refused as TLS, not by auth: {error:#}");

    // The data port: a plaintext hello is not answered; the connection is closed.
    let task_managers = cluster.get("/taskmanagers");
    let data = task_managers["taskmanagers"][0]["data_address"]
        .as_str()
        .unwrap_or_else(|| panic!("no data address: {task_managers}"))
        .to_string();
    let id = task_managers["taskmanagers"][0]["id"].as_str().unwrap_or_default().to_string();
    let index = (0..cluster.task_manager_count())
        .find(|&i| cluster.task_manager_id(i) == id)
        .unwrap_or_else(|| panic!("{id} is not one of the cluster's"));
    // A complete hello with a valid proof of membership: a plaintext data port would answer it with its own.
    let stranger = "tl-stranger"; // sorts before every tm-N, so it is the one to dial
    let args = sluice_common::cluster_auth::ClusterAuthArgs {
        cluster_auth: "secret".into(),
        cluster_secret_file: Some(secret_file.clone()),
    };
    let credentials =
        sluice_common::cluster_auth::ClusterCredentials::for_task_manager(&args).unwrap_or_else(|e| panic!("{e}"));
    let proof = credentials.hello_proof(stranger, &id);
    let mut body = vec![0u8]; // the hello kind
    body.extend_from_slice(&[0u8; 8 + 4 + 4 + 4]); // no channel
    body.extend_from_slice(b"SLCE");
    body.extend_from_slice(&2u16.to_be_bytes()); // the protocol version
    body.extend_from_slice(&(stranger.len() as u16).to_be_bytes());
    body.extend_from_slice(stranger.as_bytes());
    body.extend_from_slice(&(proof.len() as u16).to_be_bytes());
    body.extend_from_slice(&proof);
    let mut hello = (body.len() as u32).to_be_bytes().to_vec();
    hello.extend_from_slice(&body);
    let mut stream = std::net::TcpStream::connect(&data).unwrap_or_else(|e| panic!("{data}: {e}"));
    stream.set_read_timeout(Some(HANDSHAKE_ANSWER_WAIT)).unwrap_or_else(|e| panic!("{e}"));
    let _ = stream.write_all(&hello);
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    assert!(read.is_err() || !answer.windows(4).any(|w| w == b"SLCE"), "a hello answered in plaintext: {answer:?}");
    poll_until("the refused data connection to be counted", TIMEOUT, || {
        let text = cluster.task_manager_metrics(index);
        let refused = sum(&text, "sluice_requests_refused_total", &[("transport", "data")])?;
        Ok(if refused >= 1.0 { Progress::Ready(()) } else { Progress::Pending(format!("{refused} refused")) })
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
}
