//! One function per command, each the same shape: call the REST API, then print either the server's JSON
//! (`--json`) or a view for people. Errors carry the server's message and the thing concerned (file, job).
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use reqwest::StatusCode;
use serde_json::Value;
use sluice_common::ids::JobId;
use sluice_common::job::JOB_FILE_FIELD;
use sluice_common::lifecycle::CheckpointStatus;

use crate::api::{ClusterMetrics, JobDetails, JobList, JobStatus, Submitted, TaskManagerList};
use crate::client::{decode, Client, RequestError};
use crate::render::{self, Align, Table};

/// How often `savepoint`/`stop` ask whether the savepoint completed: a savepoint of small state takes tens
/// of milliseconds, and four requests a second cost the JobManager nothing.
const SAVEPOINT_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// `sluice submit FILE`: sends the job file; prints the job id.
pub async fn submit(
    client: &Client,
    file: &Path,
    from_savepoint: Option<&str>,
    quiet: bool,
    json: bool,
) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read the job file {}", file.display()))?;
    let file_name = file.file_name().map_or_else(|| "job.json".to_string(), |n| n.to_string_lossy().into_owned());
    let part = reqwest::multipart::Part::bytes(bytes).file_name(file_name).mime_str("application/json")?;
    let form = reqwest::multipart::Form::new().part(JOB_FILE_FIELD, part);
    let path = match from_savepoint {
        Some(savepoint) => {
            let mut url = reqwest::Url::parse("http://localhost/jobs/submit")?;
            url.query_pairs_mut().append_pair("savepoint_path", savepoint);
            format!("/jobs/submit?{}", url.query().unwrap_or_default())
        }
        None => "/jobs/submit".to_string(),
    };
    let answer = match client.post_multipart(&path, form).await {
        Ok(answer) => answer,
        Err(RequestError::Server { status: StatusCode::BAD_REQUEST, message, .. }) => {
            bail!("the JobManager rejected the job file {}:\n{}", file.display(), indent(&message));
        }
        Err(e) => return Err(e).with_context(|| format!("cannot submit {}", file.display())),
    };
    if json {
        return print_json(&answer);
    }
    let submitted: Submitted = decode("the submission", answer)?;
    if quiet {
        println!("{}", submitted.job_id);
    } else {
        println!("Job {} submitted ({}).", submitted.job_id, submitted.status);
        println!("Follow it with `sluice status {0}` or `sluice wait {0}`.", submitted.job_id);
    }
    Ok(())
}

/// `sluice validate FILE`: the submission checks, run locally.
pub fn validate(file: &Path) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read the job file {}", file.display()))?;
    let checked = sluice_common::job::parse_job_file(&bytes).and_then(sluice_common::job::validate);
    match checked {
        Ok(job) => {
            println!(
                "{} is valid: job '{}', {} vertices in {} chains, needs {} slots.",
                file.display(),
                job.graph.name,
                job.graph.vertices.len(),
                job.chains.len(),
                job.slots_needed()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(problems) => {
            eprintln!("{} is not a valid job file:\n{}", file.display(), indent(&problems.to_string()));
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `sluice list`: every job, as the JobManager lists them.
pub async fn list(client: &Client, json: bool) -> anyhow::Result<()> {
    let answer = client.get("/jobs").await.context("cannot list the jobs")?;
    if json {
        return print_json(&answer);
    }
    let list: JobList = decode("GET /jobs", answer)?;
    let mut table = Table::new(&[
        ("JOB ID", Align::Left),
        ("NAME", Align::Left),
        ("STATUS", Align::Left),
        ("STARTED (UTC)", Align::Left),
        ("DURATION", Align::Right),
    ]);
    for job in &list.jobs {
        table.row(vec![
            job.job_id.clone(),
            job.name.clone(),
            job.status.clone(),
            render::timestamp(job.start_time),
            render::job_duration(job.start_time, job.end_time),
        ]);
    }
    print!("{}", table.render());
    if list.jobs.is_empty() {
        println!("(no jobs yet: submit one with `sluice submit FILE`)");
    }
    Ok(())
}

/// `sluice status ID`: one job with per-vertex counters.
pub async fn status(client: &Client, job_id: &JobId, json: bool) -> anyhow::Result<()> {
    let answer = client.get(&format!("/jobs/{job_id}")).await.with_context(|| format!("cannot read job {job_id}"))?;
    if json {
        return print_json(&answer);
    }
    let job: JobDetails = decode("GET /jobs/{id}", answer)?;
    print!("{}", job_report(&job));
    Ok(())
}

/// The text `sluice status` prints for a job.
fn job_report(job: &JobDetails) -> String {
    let mut fields = vec![
        ("Job", job.job_id.clone()),
        ("Name", job.name.clone()),
        ("Status", job.status.clone()),
        ("Attempt", job.attempt.to_string()),
        ("Started", format!("{} UTC", render::timestamp(job.start_time))),
    ];
    if let Some(end) = job.end_time {
        fields.push(("Ended", format!("{} UTC", render::timestamp(end))));
    }
    fields.push(("Duration", render::job_duration(job.start_time, job.end_time)));
    if let Some(reason) = job.status_reason.as_ref() {
        fields.push(("Reason", reason.clone()));
    } else if job.restarts == 0 {
        if let Some(cause) = job.failure_cause.as_ref() {
            fields.push(("Reason", cause.clone()));
        }
    }
    if job.restarts > 0 {
        let recovery = job.last_recovery_ms.map(|ms| format!(", last recovery took {ms} ms")).unwrap_or_default();
        fields.push(("Restarts", format!("{}{recovery}", job.restarts)));
        if let Some(cause) = job.failure_cause.as_ref().filter(|_| job.status_reason.is_none()) {
            fields.push(("Last failure", cause.clone()));
        }
    }
    fields.push((
        "Network",
        format!(
            "{} sent, {} received between TaskManagers",
            render::bytes(job.remote_bytes_out),
            render::bytes(job.remote_bytes_in)
        ),
    ));
    let mut out = String::new();
    for (label, value) in fields {
        out.push_str(&format!("{label:<9} {value}\n"));
    }
    out.push('\n');
    let mut table = Table::new(&[
        ("VERTEX", Align::Left),
        ("OPERATOR", Align::Left),
        ("PARALLELISM", Align::Right),
        ("RECORDS IN", Align::Right),
        ("RECORDS OUT", Align::Right),
        ("BYTES IN", Align::Right),
        ("BYTES OUT", Align::Right),
        ("LATE", Align::Right),
    ]);
    for v in &job.vertices {
        table.row(vec![
            v.id.clone(),
            v.operator.clone(),
            v.parallelism.to_string(),
            render::count(v.records_in),
            render::count(v.records_out),
            render::bytes(v.bytes_in),
            render::bytes(v.bytes_out),
            render::count(v.late_records),
        ]);
    }
    out.push_str(&table.render());
    out
}

/// `sluice cancel ID`: records the wish; the JobManager cancels asynchronously.
pub async fn cancel(client: &Client, job_id: &JobId, json: bool) -> anyhow::Result<()> {
    let answer =
        client.post(&format!("/jobs/{job_id}/cancel")).await.with_context(|| format!("cannot cancel job {job_id}"))?;
    if json {
        return print_json(&answer);
    }
    let status: JobStatus = decode("the cancel request", answer)?;
    println!("Job {job_id} is being cancelled (now {}); `sluice wait {job_id}` follows it to the end.", status.status);
    Ok(())
}

/// `sluice savepoint ID` / `sluice stop ID`: asks for the savepoint, then polls it until it completes or
/// fails (bounded by `timeout`); prints its location.
pub async fn savepoint(
    client: &Client,
    job_id: &JobId,
    target_directory: Option<&str>,
    stop: bool,
    timeout: std::time::Duration,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let body = match target_directory {
        Some(dir) => serde_json::json!({ "target_directory": dir }),
        None => serde_json::json!({}),
    };
    let (path, what) = if stop { ("stop", "stop") } else { ("savepoint", "take a savepoint of") };
    let answer = client
        .post_json(&format!("/jobs/{job_id}/{path}"), &body)
        .await
        .with_context(|| format!("cannot {what} job {job_id}"))?;
    let trigger = answer["trigger_id"].as_str().context("the JobManager's answer has no trigger_id")?.to_string();
    if !json {
        eprintln!("job {job_id}: savepoint {trigger} started; waiting for it");
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let status = client.get(&format!("/jobs/{job_id}/savepoints/{trigger}")).await?;
        match status["status"].as_str().and_then(|s| s.parse::<CheckpointStatus>().ok()) {
            Some(CheckpointStatus::Completed) => {
                if json {
                    print_json(&status)?;
                } else {
                    let location = status["location"].as_str().unwrap_or_default();
                    println!("Savepoint completed: {location}");
                    if stop {
                        println!("Job {job_id} is stopping; restart it with `sluice submit --from-savepoint {location} FILE`.");
                    }
                }
                return Ok(ExitCode::SUCCESS);
            }
            Some(CheckpointStatus::Failed) => bail!(
                "savepoint {trigger} of job {job_id} failed: {}",
                status["failure"].as_str().unwrap_or("no reason given")
            ),
            _ if tokio::time::Instant::now() >= deadline => {
                eprintln!("job {job_id}: savepoint {trigger} is still in progress after {} s", timeout.as_secs());
                return Ok(ExitCode::from(crate::wait::EXIT_TIMED_OUT));
            }
            _ => tokio::time::sleep(SAVEPOINT_POLL_INTERVAL).await,
        }
    }
}

/// `sluice checkpoints ID`: counts, the latest completed checkpoint, and the history.
pub async fn checkpoints(client: &Client, job_id: &JobId, json: bool) -> anyhow::Result<()> {
    let answer = client
        .get(&format!("/jobs/{job_id}/checkpoints"))
        .await
        .with_context(|| format!("cannot read the checkpoints of job {job_id}"))?;
    if json {
        return print_json(&answer);
    }
    let counts = &answer["counts"];
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    println!(
        "Job {job_id}: {} completed, {} failed, {} in progress",
        n(&counts["completed"]),
        n(&counts["failed"]),
        n(&counts["in_progress"])
    );
    if let Some(latest) = answer["latest"]["completed"].as_object() {
        println!(
            "Latest completed: {} at {} ({}, {})",
            latest.get("id").map_or(0, n),
            latest.get("location").and_then(Value::as_str).unwrap_or_default(),
            render::bytes(latest.get("state_size_bytes").map_or(0, n)),
            render::duration(latest.get("duration_ms").map_or(0, n))
        );
    }
    let mut table = Table::new(&[
        ("ID", Align::Right),
        ("KIND", Align::Left),
        ("STATUS", Align::Left),
        ("TRIGGERED", Align::Left),
        ("DURATION", Align::Right),
        ("SIZE", Align::Right),
        ("DETAIL", Align::Left),
    ]);
    for c in answer["history"].as_array().into_iter().flatten() {
        let detail = match c["failure"].as_str() {
            Some(failure) => failure.to_string(),
            None if c["discarded"] == true => "discarded".to_string(),
            None => c["location"].as_str().unwrap_or_default().to_string(),
        };
        table.row(vec![
            n(&c["id"]).to_string(),
            c["kind"].as_str().unwrap_or_default().to_string(),
            c["status"].as_str().unwrap_or_default().to_string(),
            render::timestamp(n(&c["trigger_time"])),
            c["duration_ms"].as_u64().map_or_else(|| "-".to_string(), render::duration),
            render::bytes(n(&c["state_size_bytes"])),
            detail,
        ]);
    }
    print!("{}", table.render());
    Ok(())
}

/// `sluice taskmanagers`: the registered TaskManagers.
pub async fn taskmanagers(client: &Client, json: bool) -> anyhow::Result<()> {
    let answer = client.get("/taskmanagers").await.context("cannot list the TaskManagers")?;
    if json {
        return print_json(&answer);
    }
    let list: TaskManagerList = decode("GET /taskmanagers", answer)?;
    let now = render::now_ms();
    let mut table = Table::new(&[
        ("ID", Align::Left),
        ("STATE", Align::Left),
        ("SLOTS FREE", Align::Right),
        ("SLOTS", Align::Right),
        ("RPC", Align::Left),
        ("DATA", Align::Left),
        ("METRICS", Align::Left),
        ("LAST HEARTBEAT", Align::Right),
    ]);
    for tm in &list.taskmanagers {
        let heartbeat = if tm.last_heartbeat == 0 {
            "-".to_string()
        } else {
            format!("{} ago", render::duration(now.saturating_sub(tm.last_heartbeat)))
        };
        table.row(vec![
            tm.id.clone(),
            tm.state.clone(),
            tm.slots_free.to_string(),
            tm.slots_total.to_string(),
            tm.rpc_address.clone(),
            tm.data_address.clone(),
            tm.metrics_address.clone(),
            heartbeat,
        ]);
    }
    print!("{}", table.render());
    if list.taskmanagers.is_empty() {
        println!("(no TaskManager has registered with {})", client.base_url());
    }
    Ok(())
}

/// `sluice cluster`: TaskManager and slot totals.
pub async fn cluster(client: &Client, json: bool) -> anyhow::Result<()> {
    let answer = client.get("/cluster/metrics").await.context("cannot read the cluster metrics")?;
    if json {
        return print_json(&answer);
    }
    let m: ClusterMetrics = decode("GET /cluster/metrics", answer)?;
    println!("TaskManagers  {} active of {}", m.active_task_managers, m.total_task_managers);
    println!("Slots         {} free of {}", m.available_slots, m.total_slots);
    println!("Utilization   {:.0}%", m.utilization * 100.0);
    Ok(())
}

/// Prints an answer as indented JSON.
pub fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Indents every line by two spaces (for multi-line server messages under a heading).
fn indent(text: &str) -> String {
    text.lines().map(|line| format!("  {line}")).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::VertexView;

    #[test]
    fn the_status_report_shows_the_reason_and_a_row_per_vertex() {
        let job = JobDetails {
            job_id: "abc".into(),
            name: "word_count".into(),
            status: "FAILED".into(),
            attempt: 1,
            start_time: 1_700_000_000_000,
            end_time: Some(1_700_000_002_500),
            failure_cause: Some("TaskManager tm-1 lost".into()),
            status_reason: None,
            restarts: 0,
            last_recovery_ms: None,
            vertices: vec![VertexView {
                id: "count".into(),
                operator: "aggregate".into(),
                parallelism: 2,
                records_in: 1234,
                records_out: 99,
                bytes_in: 2048,
                bytes_out: 10,
                late_records: 3,
            }],
            remote_bytes_out: 0,
            remote_bytes_in: 0,
        };
        let report = job_report(&job);
        assert!(report.contains("Status    FAILED\n"), "{report}");
        assert!(report.contains("Duration  2.5s\n"), "{report}");
        assert!(report.contains("Reason    TaskManager tm-1 lost\n"), "{report}");
        assert!(report.contains("Ended     2023-11-14 22:13:22 UTC\n"), "{report}");
        let last = report.lines().last().unwrap_or_default();
        assert_eq!(
            last.split_whitespace().collect::<Vec<_>>(),
            ["count", "aggregate", "2", "1,234", "99", "2.0", "KiB", "10", "B", "3"]
        );
    }

    #[test]
    fn multi_line_messages_are_indented_under_their_heading() {
        assert_eq!(indent("a\nb"), "  a\n  b");
    }
}
