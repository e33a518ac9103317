#!/usr/bin/env bash
# Benchmark: throughput of a keyed word count (running and windowed) on a local cluster, window latency, and
# the memory it takes.
#
# Builds release binaries, starts 1 JobManager and 2 TaskManagers (1 slot each), then runs
#     datagen (lines of 1-4 random words) -> flat_map split -> select lower -> HASH by word
#       -> aggregate count -> blackhole
# once at parallelism 1 and once at parallelism 2 (its subtasks spread over both TaskManagers, so the
# HASH edge crosses TCP). Prints rows/s = rows / (job end - job start, from the JobManager), each
# process's peak RSS (VmHWM), and a TaskManager's RSS while idle. Not run in CI.
#
# Windowed workloads also get a latency run: an unbounded generator at LATENCY_ROWS_PER_S whose event time is
# the wall clock (monotonous watermarks every 200 ms), for LATENCY_SECONDS; then the TaskManagers'
# `window_emit_latency_seconds` histograms (emission wall time minus window end, per emitted row) give p50
# and p99, interpolated within buckets.
#
# Checkpoints (CHECKPOINT_WORKLOADS): the windowed jobs again at parallelism CHECKPOINT_PARALLELISM with a
# checkpoint every CHECKPOINT_INTERVAL_MS (throughput next to the run without: the cost of checkpointing), and
# large_state_rocksdb: LARGE_STATE_ROWS distinct keys deduplicated on RocksDB (state grows by one entry per
# row), checkpointed at the same interval. Each reports checkpoint durations (p50/p99 end to end, and of the
# synchronous part), the first and the last checkpoint, and the largest state, from GET /jobs/{id}/checkpoints.
#
# Recovery (RECOVERY_KILLS, default 10; 0 skips): kill → every task of the new attempt RUNNING, p50 and max over
# RECOVERY_KILLS kills, for (1) small state: `sluice-chaos` (release build) on a cluster of its own, killing a
# random TaskManager of 3 every 6-8 s while an exactly-once windowed job runs (it also checks the output), and
# (2) large state: the large_state_rocksdb job, unbounded, on this cluster; once it has deduplicated
# RECOVERY_STATE_ROWS keys (~31 bytes of RocksDB state each), tm-1 is killed with SIGKILL and started again at
# once, RECOVERY_KILLS times, each after a checkpoint completed since the last recovery.
#
# Kafka (KAFKA_ROWS): `sluice-kafka-bench` starts a nisshi broker (scripts/install-test-tools.sh installs it,
# at opt-level 1), writes KAFKA_ROWS lines into a 4-partition topic and reads them back (the broker's own
# produce and consume ceilings: read the job's rate against these), then runs a bounded kafka_source ->
# split -> lower -> HASH -> running count -> kafka_sink (at least once) job on this cluster at each of
# KAFKA_PARALLELISMS and prints rows/s.
#
# Usage: scripts/benchmark.sh
# Environment: ROWS (default 20000000), PARALLELISMS (default "1 2"), BENCHMARK_TIMEOUT_S (default 1800),
#              WORKLOADS (default "word_count windowed_heap windowed_rocksdb", see job_file),
#              CARGO_TARGET_DIR (default ~/.cache/sluice/target), BENCHMARK_SKIP_BUILD (set: use the release
#              binaries already built instead of running cargo), LATENCY_SECONDS (default 60; 0 skips the
#              latency runs), LATENCY_ROWS_PER_S (default 200000), CHECKPOINT_WORKLOADS (default
#              "windowed_heap windowed_rocksdb large_state_rocksdb"; empty skips), CHECKPOINT_PARALLELISM
#              (default 2), CHECKPOINT_INTERVAL_MS (default 1000), LARGE_STATE_ROWS (default 10000000),
#              RECOVERY_KILLS (default 10), RECOVERY_STATE_ROWS (default 36000000; 0 skips the large-state run),
#              KAFKA_ROWS (default 2000000; 0 skips the Kafka run), KAFKA_PARALLELISMS (default "1 2"),
#              BENCHMARK_TLS (default off; on: every transport over TLS, certificates from gen-certs.sh).
set -euo pipefail

cd "$(dirname "$0")/.."
source scripts/lib.sh

readonly ROWS="${ROWS:-20000000}"
readonly PARALLELISMS="${PARALLELISMS:-1 2}"
readonly WORKLOADS="${WORKLOADS:-word_count windowed_heap windowed_rocksdb}"
# How long one run may take before the benchmark gives up, in seconds.
readonly RUN_TIMEOUT_S="${BENCHMARK_TIMEOUT_S:-1800}"
readonly LATENCY_SECONDS="${LATENCY_SECONDS:-60}"
readonly LATENCY_ROWS_PER_S="${LATENCY_ROWS_PER_S:-200000}"
readonly CHECKPOINT_WORKLOADS="${CHECKPOINT_WORKLOADS-windowed_heap windowed_rocksdb large_state_rocksdb}"
readonly CHECKPOINT_PARALLELISM="${CHECKPOINT_PARALLELISM:-2}"
readonly CHECKPOINT_INTERVAL_MS="${CHECKPOINT_INTERVAL_MS:-1000}"
readonly LARGE_STATE_ROWS="${LARGE_STATE_ROWS:-10000000}"
readonly RECOVERY_KILLS="${RECOVERY_KILLS:-10}"
readonly RECOVERY_STATE_ROWS="${RECOVERY_STATE_ROWS:-36000000}"
readonly KAFKA_ROWS="${KAFKA_ROWS:-2000000}"
readonly KAFKA_PARALLELISMS="${KAFKA_PARALLELISMS:-1 2}"
readonly REGISTER_TIMEOUT_S=60
readonly DIR=data/benchmark
if [[ "${BENCHMARK_TLS:-off}" == on ]]; then
  scripts/gen-certs.sh "$DIR-certs" >/dev/null
  export TLS=on TLS_CERT_FILE="$DIR-certs/node.pem" TLS_KEY_FILE="$DIR-certs/node.key" TLS_CA_FILE="$DIR-certs/ca.pem"
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}"
readonly BIN="$CARGO_TARGET_DIR/release"
readonly SLUICE="$BIN/sluice"

trap stop_cluster EXIT

# job_file WORKLOAD PARALLELISM [MODE]: a benchmark job.
#   word_count:        the running count of examples/jobs/datagen_word_count.json;
#   windowed_heap:     10 s tumbling event-time windows counting words, state on the heap;
#   windowed_rocksdb:  the same with state in RocksDB.
# MODE throughput (default): ROWS rows as fast as possible. Windowed jobs give each line the next event-time
# millisecond (20 M lines span 5.5 h of event time) with watermarks 1 s behind, every 200 ms as Flink does
# by default.
# MODE latency: unbounded, LATENCY_ROWS_PER_S in total, event time = the wall clock, monotonous watermarks.
# MODE checkpointed: throughput, with a checkpoint every CHECKPOINT_INTERVAL_MS.
job_file() {
  local workload="$1" p="$2" mode="${3:-throughput}" checkpointing=""
  [[ "$mode" == checkpointed ]] && checkpointing=', "checkpointing": {"interval_ms": '"$CHECKPOINT_INTERVAL_MS"'}'
  local event_time="" time_column="" keep_time="" count_vertex backend="HEAP" rows="\"rows\": $ROWS, "
  case "$workload" in
    word_count)
      count_vertex='{"id": "count", "parallelism": '"$p"', "aggregate": {
        "keys": ["word"], "aggregates": [{"function": "count", "name": "count"}]}}'
      ;;
    windowed_heap | windowed_rocksdb)
      [[ "$workload" == windowed_rocksdb ]] && backend="ROCKSDB"
      event_time=', "event_time": {"column": "ts", "bounded_out_of_orderness_ms": 1000}'
      time_column=', {"name": "ts", "event_time": {"start_ms": 1700000000000, "step_ms": 1}}'
      keep_time=', {"name": "ts", "expr": "ts"}'
      count_vertex='{"id": "count", "parallelism": '"$p"', "window": {"keys": ["word"],
        "tumbling": {"size_ms": 10000}, "aggregates": [{"function": "count", "name": "count"}]}}'
      ;;
    *) fail "unknown workload '$workload' (word_count, windowed_heap, windowed_rocksdb)" ;;
  esac
  if [[ "$mode" == latency ]]; then
    rows="\"rows_per_second\": $LATENCY_ROWS_PER_S, "
    event_time=', "event_time": {"column": "ts", "monotonous": {}}'
    time_column=', {"name": "ts", "wall_clock": {}}'
  fi
  cat <<EOF
{
  "name": "benchmark_${workload}_p${p}_$mode",
  "config": {"state_backend": "$backend"$checkpointing},
  "vertices": [
    {"id": "lines", "parallelism": $p, "datagen": {
      "seed": 42, ${rows}"batch_size": 4096,
      "columns": [{"name": "line", "words": {"min_words": 1, "max_words": 4}}$time_column]}$event_time},
    {"id": "split", "parallelism": $p, "flat_map": {"column": "line", "output_column": "word"}},
    {"id": "lower", "parallelism": $p, "select": {"columns": [{"name": "word", "expr": "lower(word)"}$keep_time]}},
    $count_vertex,
    {"id": "sink", "parallelism": $p, "blackhole_sink": {}}
  ],
  "edges": [
    {"from": "lines", "to": "split"},
    {"from": "split", "to": "lower"},
    {"from": "lower", "to": "count", "partitioning": "HASH", "key": ["word"]},
    {"from": "count", "to": "sink"}
  ]
}
EOF
}

# large_state_job P [ROWS]: ROWS (default LARGE_STATE_ROWS; "unbounded": no end) distinct keys (n = 0, 1, ...)
# deduplicated on RocksDB: one state entry per row, so the state grows through the run; a checkpoint every
# CHECKPOINT_INTERVAL_MS.
large_state_job() {
  local p="$1" rows="${2:-$LARGE_STATE_ROWS}" bound
  bound="\"rows\": $rows, "
  [[ "$rows" == unbounded ]] && bound=""
  cat <<EOF
{
  "name": "benchmark_large_state_rocksdb_p$p",
  "config": {"state_backend": "ROCKSDB",
             "checkpointing": {"interval_ms": $CHECKPOINT_INTERVAL_MS, "timeout_ms": 600000}},
  "vertices": [
    {"id": "numbers", "parallelism": $p, "datagen": {"seed": 1, ${bound}"batch_size": 4096,
      "columns": [{"name": "n", "sequence": {"start": 0}},
                  {"name": "payload", "words": {"min_words": 4, "max_words": 4}}]}},
    {"id": "dedup", "parallelism": $p, "deduplicate": {"keys": ["n"], "ttl_ms": 86400000}},
    {"id": "sink", "parallelism": $p, "blackhole_sink": {}}
  ],
  "edges": [
    {"from": "numbers", "to": "dedup", "partitioning": "HASH", "key": ["n"]},
    {"from": "dedup", "to": "sink"}
  ]
}
EOF
}

# summary_field JSON FIELD STAT: STAT (min, p50, p99, max) of FIELD in a checkpoints answer's summary.
summary_field() {
  grep -o "\"$2\":{[^}]*}" <<<"$1" | grep -o "\"$3\":[0-9]*" | head -n 1 | cut -d: -f2
}

# checkpoint_report JOB_ID: "completed failed e2e_p50 e2e_p99 sync_p50 sync_p99 first_ms last_ms max_bytes"
# (max_bytes: the most one checkpoint wrote; incremental RocksDB checkpoints write only their new files)
# from GET /jobs/{id}/checkpoints (history newest first: the first checkpoint is the last one listed).
checkpoint_report() {
  local answer durations sizes
  answer="$(jm_curl "/jobs/$1/checkpoints")" || fail "cannot read the checkpoints of job $1"
  # Only the history's entries (the latest completed checkpoint is repeated outside it).
  durations="$(grep -o '"history":\[[^]]*\]' <<<"$answer" | grep -o '"duration_ms":[0-9]*' | cut -d: -f2)"
  sizes="$(grep -o '"state_size_bytes":[0-9]*' <<<"$answer" | cut -d: -f2 | sort -n | tail -n 1)"
  printf '%s %s %s %s %s %s %s %s %s\n' \
    "$(grep -o '"completed":[0-9]*' <<<"$answer" | head -n 1 | cut -d: -f2)" \
    "$(grep -o '"failed":[0-9]*' <<<"$answer" | head -n 1 | cut -d: -f2)" \
    "$(summary_field "$answer" end_to_end_duration_ms p50)" "$(summary_field "$answer" end_to_end_duration_ms p99)" \
    "$(summary_field "$answer" sync_ms p50)" "$(summary_field "$answer" sync_ms p99)" \
    "$(tail -n 1 <<<"$durations")" "$(head -n 1 <<<"$durations")" "${sizes:-0}"
}

# run_to_end JOB_FILE: submits, waits until FINISHED, prints "job_id elapsed_ms".
run_to_end() {
  local job_id details start_ms end_ms
  job_id="$("$SLUICE" submit --quiet "$1")"
  if ! "$SLUICE" wait "$job_id" --timeout "$RUN_TIMEOUT_S" >&2; then
    "$SLUICE" status "$job_id" >&2 || true
    show_all_logs
    fail "benchmark job $job_id did not finish"
  fi
  details="$("$SLUICE" status --json "$job_id")"
  start_ms="$(json_number start_time <<<"$details")"
  end_ms="$(json_number end_time <<<"$details")"
  [[ -n "$start_ms" && -n "$end_ms" ]] || fail "job $job_id has no start or end time: $details"
  echo "$job_id $((end_ms - start_ms))"
}

# emit_latency JOB_ID: "p50_ms p99_ms observations" of the job's window_emit_latency_seconds histograms,
# summed over both TaskManagers' series and interpolated linearly within the bucket holding each quantile.
emit_latency() {
  local job="$1" tm address
  for tm in tm-1 tm-2; do
    address="$(json_string metrics <"$DIR/$tm/taskmanager.addr")"
    curl -fsS "http://$address/metrics" || fail "cannot read the metrics of $tm at $address"
  done | awk -v job="$job" '
    /^window_emit_latency_seconds_bucket\{/ && index($0, "job=\"" job "\"") {
      match($0, /le="[^"]*"/); le = substr($0, RSTART + 4, RLENGTH - 5); counts[le] += $NF
    }
    END { for (le in counts) print le, counts[le] }' | sort -g | awk '
    { bound[NR] = $1; cum[NR] = $2; n = NR }
    function quantile(q,   target, i, lower, below) {
      target = q * cum[n]; lower = 0; below = 0
      for (i = 1; i <= n; i++) {
        if (cum[i] >= target) {
          if (bound[i] == "+Inf") return "inf"
          return sprintf("%.0f", 1000 * (lower + (bound[i] - lower) * (cum[i] > below ? (target - below) / (cum[i] - below) : 1)))
        }
        lower = bound[i]; below = cum[i]
      }
      return "?"
    }
    END { if (n == 0 || cum[n] == 0) print "? ? 0"; else print quantile(0.5), quantile(0.99), cum[n] }'
}

# forget_process PID: stop_cluster and check_processes no longer look after PID (it was killed on purpose).
forget_process() {
  local i
  for i in "${!SLUICE_PIDS[@]}"; do
    if [[ "${SLUICE_PIDS[$i]}" == "$1" ]]; then
      unset 'SLUICE_PIDS[i]' 'SLUICE_NAMES[i]' 'SLUICE_LOGS[i]'
    fi
  done
}

# new_attempt_running JOB_ID ATTEMPT: whether the job is RUNNING in an attempt after ATTEMPT with every task
# running.
new_attempt_running() {
  local details metrics
  details="$("$SLUICE" status --json "$1")" || return 1
  [[ "$(json_string status <<<"$details")" == RUNNING ]] || return 1
  (($(json_number attempt <<<"$details") > $2)) || return 1
  metrics="$(jm_curl "/jobs/$1/metrics")" || return 1
  grep -q '"state":"TASK_RUNNING"' <<<"$metrics" || return 1
  ! grep -o '"state":"[A-Z_]*"' <<<"$metrics" | grep -vq TASK_RUNNING
}

# completed_checkpoints JOB_ID: how many checkpoints of the job completed.
completed_checkpoints() {
  jm_curl "/jobs/$1/checkpoints" | grep -o '"completed":[0-9]*' | head -n 1 | cut -d: -f2
}

# source_rows JOB_ID: rows the job's generator emitted so far (its subtasks' records_out).
source_rows() {
  jm_curl "/jobs/$1/metrics" | grep -o '"id":"numbers","operator":"datagen","parallelism":[0-9]*,"records_in":[0-9]*,"records_out":[0-9]*' \
    | grep -o '"records_out":[0-9]*' | head -n 1 | cut -d: -f2
}

# recovery_kills JOB_ID KILLS: KILLS times, once a checkpoint completed since the last recovery, kills tm-1
# with SIGKILL, starts it again at once, and measures kill → every task of a new attempt running. Prints the
# durations in ms, one per line.
recovery_kills() {
  local job_id="$1" kills="$2" i attempt before start_ns deadline
  for ((i = 1; i <= kills; i++)); do
    before="$(completed_checkpoints "$job_id")"
    deadline=$((SECONDS + RUN_TIMEOUT_S))
    until (($(completed_checkpoints "$job_id") > before)); do
      ((SECONDS < deadline)) || fail "job $job_id completed no checkpoint within ${RUN_TIMEOUT_S}s"
      sleep 0.2
    done
    attempt="$("$SLUICE" status --json "$job_id" | json_number attempt)"
    start_ns="$(date +%s%N)"
    kill -KILL "$tm1_pid"
    wait "$tm1_pid" 2>/dev/null || true
    forget_process "$tm1_pid"
    start_taskmanager "$BIN" "$DIR" tm-1 1
    tm1_pid="$START_PID"
    deadline=$((SECONDS + RUN_TIMEOUT_S))
    until new_attempt_running "$job_id" "$attempt"; do
      ((SECONDS < deadline)) || fail "job $job_id did not recover within ${RUN_TIMEOUT_S}s"
      sleep 0.05
    done
    echo $((($(date +%s%N) - start_ns) / 1000000))
  done
}

# distribution: "p50 max count" of the numbers on stdin.
distribution() {
  sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) { print "- - 0" } else { print v[int((NR + 1) / 2)], v[NR], NR } }'
}

# job_status JOB_ID: the job's status word.
job_status() {
  "$SLUICE" status --json "$1" | json_string status
}

if [[ -n "${BENCHMARK_SKIP_BUILD:-}" ]]; then
  info "BENCHMARK_SKIP_BUILD is set: using the release binaries already in $BIN"
  for binary in sluice sluice-jobmanager sluice-taskmanager; do
    [[ -x "$BIN/$binary" ]] || fail "$BIN/$binary is missing; run without BENCHMARK_SKIP_BUILD to build it"
  done
else
  section "Building release binaries (cargo build --release --bins)"
  cargo build --release --bins
fi

section "Starting a local cluster under $DIR (1 JobManager, 2 TaskManagers with 1 slot each)"
rm -rf "$DIR"
mkdir -p "$DIR"
start_jobmanager "$BIN" "$DIR"
jm_pid="$START_PID"
start_taskmanager "$BIN" "$DIR" tm-1 1
tm1_pid="$START_PID"
start_taskmanager "$BIN" "$DIR" tm-2 1
tm2_pid="$START_PID"
wait_for_taskmanagers "$SLUICE" 2 "$REGISTER_TIMEOUT_S"
idle_tm_rss="$(rss_kib "$tm1_pid")"
info "idle TaskManager RSS: ${idle_tm_rss} KiB"

command -v curl >/dev/null || fail "curl is missing (apt-get install curl): the latency runs read /metrics with it"

results=()
latencies=()
for workload in $WORKLOADS; do
for p in $PARALLELISMS; do
  section "$workload, parallelism $p: $ROWS rows"
  job_file "$workload" "$p" >"$DIR/job-$workload-p$p.json"
  read -r job_id elapsed_ms <<<"$(run_to_end "$DIR/job-$workload-p$p.json")"
  rows_per_s="$(awk -v rows="$ROWS" -v ms="$elapsed_ms" 'BEGIN { printf "%.0f", (ms > 0 ? rows * 1000 / ms : 0) }')"
  ok "$workload, parallelism $p: $ROWS rows in ${elapsed_ms} ms = $rows_per_s rows/s"
  results+=("$workload $p $elapsed_ms $rows_per_s")

  if [[ "$workload" == windowed_* && "$LATENCY_SECONDS" -gt 0 ]]; then
    section "$workload, parallelism $p: latency at $LATENCY_ROWS_PER_S rows/s for ${LATENCY_SECONDS}s"
    job_file "$workload" "$p" latency >"$DIR/job-$workload-p$p-latency.json"
    job_id="$("$SLUICE" submit --quiet "$DIR/job-$workload-p$p-latency.json")"
    deadline=$((SECONDS + REGISTER_TIMEOUT_S))
    until [[ "$(job_status "$job_id")" == RUNNING ]]; do
      ((SECONDS < deadline)) || fail "latency job $job_id is not RUNNING after ${REGISTER_TIMEOUT_S}s"
      sleep 0.2
    done
    # The measurement window itself: a fixed run time is what this step measures, not a synchronization.
    sleep "$LATENCY_SECONDS"
    [[ "$(job_status "$job_id")" == RUNNING ]] || fail "latency job $job_id stopped: $("$SLUICE" status "$job_id")"
    read -r p50 p99 observations <<<"$(emit_latency "$job_id")"
    "$SLUICE" cancel "$job_id" >/dev/null
    "$SLUICE" wait "$job_id" --timeout 60 >/dev/null || [[ "$(job_status "$job_id")" == CANCELED ]] \
      || fail "latency job $job_id did not cancel"
    ok "$workload, parallelism $p: window emission latency p50 ${p50} ms, p99 ${p99} ms ($observations rows)"
    latencies+=("$workload $p $p50 $p99 $observations")
  fi
done
done

checkpoints=()
for workload in $CHECKPOINT_WORKLOADS; do
  p="$CHECKPOINT_PARALLELISM"
  if [[ "$workload" == large_state_rocksdb ]]; then
    section "$workload, parallelism $p: $LARGE_STATE_ROWS distinct keys, a checkpoint every ${CHECKPOINT_INTERVAL_MS} ms"
    large_state_job "$p" >"$DIR/job-$workload-p$p-checkpointed.json"
    rows="$LARGE_STATE_ROWS"
  else
    section "$workload, parallelism $p: $ROWS rows, a checkpoint every ${CHECKPOINT_INTERVAL_MS} ms"
    job_file "$workload" "$p" checkpointed >"$DIR/job-$workload-p$p-checkpointed.json"
    rows="$ROWS"
  fi
  read -r job_id elapsed_ms <<<"$(run_to_end "$DIR/job-$workload-p$p-checkpointed.json")"
  rows_per_s="$(awk -v rows="$rows" -v ms="$elapsed_ms" 'BEGIN { printf "%.0f", (ms > 0 ? rows * 1000 / ms : 0) }')"
  report="$(checkpoint_report "$job_id")"
  ok "$workload, parallelism $p, checkpointed: $rows rows in ${elapsed_ms} ms = $rows_per_s rows/s; checkpoints: $report"
  checkpoints+=("$workload $p $rows_per_s $report")
done

recoveries=()
if ((RECOVERY_KILLS > 0 && RECOVERY_STATE_ROWS > 0)); then
  p=2
  section "Recovery, large state: large_state_rocksdb unbounded at parallelism $p until $RECOVERY_STATE_ROWS keys, then $RECOVERY_KILLS kills of tm-1"
  large_state_job "$p" unbounded >"$DIR/job-recovery-large-state.json"
  job_id="$("$SLUICE" submit --quiet "$DIR/job-recovery-large-state.json")"
  deadline=$((SECONDS + RUN_TIMEOUT_S))
  until (($(source_rows "$job_id" || echo 0) >= RECOVERY_STATE_ROWS)); do
    ((SECONDS < deadline)) || fail "job $job_id did not reach $RECOVERY_STATE_ROWS keys within ${RUN_TIMEOUT_S}s"
    check_processes
    sleep 1
  done
  state_bytes="$(du -sb "$DIR/jobmanager/checkpoints/$job_id/shared" 2>/dev/null | cut -f1)"
  info "$(source_rows "$job_id") keys deduplicated; ${state_bytes:-?} bytes in the job's shared checkpoint files"
  # In this shell, not a pipeline's subshell: it replaces tm-1, whose new PID stop_cluster must know.
  recovery_kills "$job_id" "$RECOVERY_KILLS" >"$DIR/recovery-large.txt"
  read -r p50 max count <<<"$(distribution <"$DIR/recovery-large.txt")"
  ok "large state (${state_bytes:-?} B of checkpointed SST files): kill → RUNNING p50 ${p50} ms, max ${max} ms over $count kills"
  recoveries+=("large_state_rocksdb ${state_bytes:-?} $count $p50 $max")
  "$SLUICE" cancel "$job_id" >/dev/null
  "$SLUICE" wait "$job_id" --timeout 120 >/dev/null || [[ "$(job_status "$job_id")" == CANCELED ]] \
    || fail "job $job_id did not cancel"
fi
if ((RECOVERY_KILLS > 0)); then
  section "Recovery, small state: sluice-chaos (release build), $RECOVERY_KILLS TaskManager kills"
  [[ -x "$BIN/sluice-chaos" ]] || fail "$BIN/sluice-chaos is missing; run without BENCHMARK_SKIP_BUILD to build it"
  # One kill every 6-8 s of input: enough input for RECOVERY_KILLS of them.
  SLUICE_BIN_DIR="$BIN" "$BIN/sluice-chaos" --duration $((RECOVERY_KILLS * 8 + 10)) --kill-every 6-8 \
    --restart-after 1 --seed 1 | tee "$DIR/recovery-small.txt" || fail "the chaos run found lost or repeated records"
  read -r p50 max count <<<"$(grep -o 'recovered in [0-9]* ms' "$DIR/recovery-small.txt" | grep -o '[0-9]*' | distribution)"
  recoveries+=("windowed_heap(chaos) - $count $p50 $max")
fi

kafka=()
if ((KAFKA_ROWS > 0)); then
  section "Kafka: $KAFKA_ROWS lines through Kafka -> word count -> Kafka (nisshi broker), parallelism $KAFKA_PARALLELISMS"
  [[ -x "$BIN/sluice-kafka-bench" ]] || fail "$BIN/sluice-kafka-bench is missing; run without BENCHMARK_SKIP_BUILD"
  "$BIN/sluice-kafka-bench" --rest "$JM_REST" --rows "$KAFKA_ROWS" --parallelisms "${KAFKA_PARALLELISMS// /,}" \
    --timeout "$RUN_TIMEOUT_S" | tee "$DIR/kafka.txt" || fail "the Kafka benchmark failed"
  mapfile -t kafka <"$DIR/kafka.txt"
fi

section "Results"
printf '    %-18s %-12s %12s %14s\n' WORKLOAD PARALLELISM "TIME (ms)" "ROWS/S"
for line in "${results[@]}"; do
  read -r workload p ms rate <<<"$line"
  printf '    %-18s %-12s %12s %14s\n' "$workload" "$p" "$ms" "$rate"
done
if ((${#latencies[@]} > 0)); then
  printf '\n    %-18s %-12s %10s %10s %12s   (at %s rows/s, event time = wall clock)\n' WORKLOAD PARALLELISM \
    "P50 (ms)" "P99 (ms)" "WINDOW ROWS" "$LATENCY_ROWS_PER_S"
  for line in "${latencies[@]}"; do
    read -r workload p p50 p99 observations <<<"$line"
    printf '    %-18s %-12s %10s %10s %12s\n' "$workload" "$p" "$p50" "$p99" "$observations"
  done
fi
if ((${#checkpoints[@]} > 0)); then
  printf '\n    a checkpoint every %s ms; durations in ms: end to end p50/p99, synchronous part p50/p99, first, last\n' \
    "$CHECKPOINT_INTERVAL_MS"
  printf '    %-20s %3s %12s %5s %5s %8s %8s %9s %9s %8s %8s %14s\n' WORKLOAD P ROWS/S DONE FAIL E2E_P50 E2E_P99 \
    SYNC_P50 SYNC_P99 FIRST LAST "MAX WRITTEN (B)"
  for line in "${checkpoints[@]}"; do
    read -r workload p rate done failed e50 e99 s50 s99 first last bytes <<<"$line"
    printf '    %-20s %3s %12s %5s %5s %8s %8s %9s %9s %8s %8s %14s\n' "$workload" "$p" "$rate" "$done" "$failed" \
      "$e50" "$e99" "$s50" "$s99" "$first" "$last" "$bytes"
  done
fi
if ((${#recoveries[@]} > 0)); then
  printf '\n    recovery: SIGKILL of a TaskManager → every task of the new attempt RUNNING, in ms\n'
  printf '    %-24s %16s %6s %8s %8s\n' WORKLOAD "STATE (B)" KILLS P50 MAX
  for line in "${recoveries[@]}"; do
    read -r workload bytes count p50 max <<<"$line"
    printf '    %-24s %16s %6s %8s %8s\n' "$workload" "$bytes" "$count" "$p50" "$max"
  done
fi
if ((${#kafka[@]} > 0)); then
  printf '\n'
  printf '    %s\n' "${kafka[@]}"
fi
printf '\n    %-24s %12s\n' PROCESS "PEAK RSS (KiB)"
printf '    %-24s %12s\n' jobmanager "$(peak_rss_kib "$jm_pid")"
printf '    %-24s %12s\n' tm-1 "$(peak_rss_kib "$tm1_pid")"
printf '    %-24s %12s\n' tm-2 "$(peak_rss_kib "$tm2_pid")"
printf '    %-24s %12s\n' "tm-1 idle (RSS)" "$idle_tm_rss"
