#!/usr/bin/env bash
# Nexmark on Sluice (and, with --flink, on Apache Flink side by side): throughput, throughput per core used, p99
# processing latency and checkpoints of the Nexmark queries in examples/jobs/nexmark/ (docs/nexmark.md).
#
# Builds the release binaries of the cluster (into CARGO_TARGET_DIR, default ~/.cache/sluice/target-release: not the debug
# builds' target directory, so neither blocks the other on cargo's lock), starts a local cluster under
# data/nexmark (1 JobManager, 1 TaskManager with 2 slots, loopback, ports the processes pick; stopped by PID on
# exit), and runs every query at parallelism 1 and 2 (the stateful ones, q3 onwards, on heap and on RocksDB state), each
# with a checkpoint every CHECKPOINT_INTERVAL_MS. Each run is the query's job file with every vertex's
# parallelism, the source's `events` (bounded), the checkpoint interval and the state backend rewritten (jq),
# submitted and waited for until FINISHED. Per run:
#   - wall seconds: the job's start_time to end_time (GET /jobs/{id}: submission to the last task finished);
#   - events/s: events / wall seconds. `events` are Nexmark events of all three kinds (the source skips the
#     8 % persons and auctions of a bid query by their number, as the reference's bid view filters them);
#     bids are 92 % of them;
#   - CPU seconds: utime + stime of the TaskManager process (/proc/PID/stat) from before the submission to
#     after FINISHED; events per core = events / CPU seconds;
#   - p99 processing latency at the sink: the TaskManager's `processing_latency_seconds_bucket{operator="sink"}`
#     (latency markers, one a second per source subtask), scraped every SCRAPE_INTERVAL_S while the job runs
#     (a task's series go when it ends); the last scrape before the end, summed over subtasks, interpolated
#     within its bucket;
#   - checkpoints completed and their mean duration (GET /jobs/{id}/checkpoints, the history's completed
#     entries);
#   - foreign CPU: what processes other than the JobManager and TaskManager used meanwhile, in cores (a run
#     disturbed by a build is worth little: check this column). Before each run the script waits (up to
#     IDLE_WAIT_S) until the machine is idle.
# Each configuration runs REPS times; the run with the median events/s is reported.
#
# --flink: then the same queries in Flink 2.3 through ../shared/peers/flink (its setup.sh first if FLINKPEER,
# default /tmp/flinkpeer, has no PyFlink): scripts/nexmark/flink/qN.sql (datagen rows, Flink's query texts) run by
# scripts/nexmark/flink_bench.py on bench.py's cluster (1 JobManager, 1 TaskManager with 2 slots; after the Sluice
# cluster stopped), the same checkpoint interval and state backends, REPS runs each, on the rows of as many
# events as flink_default_events says (the stateful queries: as many as Sluice's; the stateless ones: fewer, a
# steady rate is reached sooner than Flink's q0 would take on Sluice's count). Flink's
# throughput is bench.py's (rows / processing time: first task RUNNING to FINISHED); its per-core figure is
# rows / CPU seconds of its TaskManager process over the run, as for Sluice. The comparison is on the rows a
# query reads (bids; persons and auctions for q3 and q8; auctions and bids for q4): Sluice's rows/s (and per core) over Flink's.
#
# Usage: scripts/nexmark.sh [--flink] [--events N] [--queries q0,q1,...] [--reps N]
#   --events N: events per run for every query, on both systems (default: per query, see default_events).
# Environment: CARGO_TARGET_DIR (default ~/.cache/sluice/target-release), BENCHMARK_SKIP_BUILD (set: use the
#              release binaries already built), PARALLELISMS (default "1 2"), REPS (default 3),
#              CHECKPOINT_INTERVAL_MS (default 1000), NEXMARK_TIMEOUT_S (a run's limit, default 600),
#              SCRAPE_INTERVAL_S (default 0.5), IDLE_WAIT_S (default 300; 0: do not wait),
#              FLINK_PEER (default ../shared/peers/flink), FLINKPEER (default /tmp/flinkpeer), FLINK_JOB_TIMEOUT
#              (bench.py's limit on one Flink job, default here 900 s).
# Not run in CI.
set -euo pipefail

cd "$(dirname "$0")/.."
source scripts/lib.sh

usage() {
  sed -n 's/^# \{0,1\}//; /^Usage:/,/^Not run in CI/p' "$0" >&2
  exit 2
}

readonly COMMAND_LINE="scripts/nexmark.sh${*:+ $*}"
FLINK=0
EVENTS=""
QUERIES="q0,q1,q2,q3,q4,q5,q7,q8,q11,q12"
REPS="${REPS:-3}"
while (($# > 0)); do
  case "$1" in
    --flink) FLINK=1 ;;
    --events) EVENTS="${2:?--events needs a number}"; shift ;;
    --queries) QUERIES="${2:?--queries needs a list}"; shift ;;
    --reps) REPS="${2:?--reps needs a number}"; shift ;;
    -h | --help) usage ;;
    *) printf 'unknown argument: %s\n' "$1" >&2; usage ;;
  esac
  shift
done
[[ -z "$EVENTS" || "$EVENTS" =~ ^[1-9][0-9]*$ ]] || fail "--events must be a positive number (got '$EVENTS')"
[[ "$REPS" =~ ^[1-9][0-9]*$ ]] || fail "--reps must be a positive number (got '$REPS')"

readonly PARALLELISMS="${PARALLELISMS:-1 2}"
readonly CHECKPOINT_INTERVAL_MS="${CHECKPOINT_INTERVAL_MS:-1000}"
readonly RUN_TIMEOUT_S="${NEXMARK_TIMEOUT_S:-600}"
readonly SCRAPE_INTERVAL_S="${SCRAPE_INTERVAL_S:-0.5}"
readonly IDLE_WAIT_S="${IDLE_WAIT_S:-300}"
# The machine counts as idle below this many cores of use (the cluster's own idle use included).
readonly IDLE_CORES=0.25
readonly REGISTER_TIMEOUT_S=60
readonly DIR=data/nexmark
readonly JOBS=examples/jobs/nexmark
readonly FLINK_PEER="${FLINK_PEER:-$PWD/../shared/peers/flink}"
export FLINKPEER="${FLINKPEER:-/tmp/flinkpeer}"
# bench.py's limit on one Flink job (its default, 240 s, is short for q11 at p=1 on 2 cores).
export FLINK_JOB_TIMEOUT="${FLINK_JOB_TIMEOUT:-900}"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target-release}"
readonly BIN="$CARGO_TARGET_DIR/release"
readonly SLUICE="$BIN/sluice"
readonly HZ="$(getconf CLK_TCK)"

IFS=, read -r -a QUERY_LIST <<<"$QUERIES"
for q in "${QUERY_LIST[@]}"; do
  [[ -f "$JOBS/$q.json" ]] || fail "no job file $JOBS/$q.json (queries: $(ls "$JOBS" | sed 's/\.json$//' | paste -sd, -))"
  ((FLINK == 0)) || [[ -f scripts/nexmark/flink/$q.sql ]] || fail "no Flink SQL scripts/nexmark/flink/$q.sql"
done
command -v jq >/dev/null || fail "jq is missing (apt-get install jq): job files and REST answers are read with it"
command -v curl >/dev/null || fail "curl is missing (apt-get install curl)"

# default_events QUERY BACKEND: events per Sluice run. The stateless queries run long enough (~10-15 s on 2
# cores; measured 2026-12-07 at p=1: 6.5 M events/s) for a steady rate. The stateful ones run on as many events
# as Flink's runs (flink_default_events), since their state, and with it the cost of each checkpoint, grows
# with the events: a longer run would be a harder one.
default_events() {
  case "$1" in
    q0 | q1 | q2) echo 100000000 ;;
    # q7's state does not grow with the run (its Top-N keeps only each window's highest bids), so it runs
    # long enough for a steady rate too: 2 M events ended within a second, before its first checkpoint.
    q7) echo 20000000 ;;
    *) flink_default_events "$1" "$2" ;;
  esac
}

# flink_default_events QUERY BACKEND: events per Flink run, so that one takes ~10-60 s (measured 2026-12-07 at
# p=1: q0-q2 ~0.4 M rows/s; q5 90-170 K; q7 40-155 K; q8 80-100 K persons and auctions; q11 27-190 K). q3 and
# q8 read only the persons and auctions, 8 % of the events.
flink_default_events() {
  case "$1" in
    q0 | q1 | q2) echo 10000000 ;;
    q3 | q8) echo 20000000 ;;
    # A count per bidder and wall-clock window: light, and its state is only the open windows'.
    q12) echo 10000000 ;;
    *) echo 2000000 ;;
  esac
}

# goal_per_core QUERY: issue 23's goal in events/s per core ("-": none of its own, only >= 3x Flink).
goal_per_core() {
  case "$1" in
    q0 | q1 | q2) echo 1000000 ;;
    q4 | q5) echo 250000 ;;
    q7) echo 200000 ;;
    q8) echo 400000 ;;
    *) echo - ;;
  esac
}

# input_rows QUERY EVENTS: the rows a query reads of events 0..EVENTS-1: persons and auctions for q3 and q8 (1 and
# 3 of every 50: ids 0 and 1-3 of each cycle), auctions and bids for q4 (49 of every 50: ids 1-49), bids for the
# others (46 of every 50: ids 4-49).
input_rows() {
  local n="$2"
  case "$1" in
    q3 | q8) echo $((n / 50 + (n % 50 > 0 ? 1 : 0) + n / 50 * 3 + (n % 50 > 4 ? 3 : (n % 50 > 1 ? n % 50 - 1 : 0)))) ;;
    q4) echo $((n / 50 * 49 + (n % 50 > 1 ? n % 50 - 1 : 0))) ;;
    *) echo $((n / 50 * 46 + (n % 50 > 4 ? n % 50 - 4 : 0))) ;;
  esac
}

# backends QUERY: the state backends a query runs on (only stateful queries run on RocksDB too).
backends() {
  case "$1" in
    q0 | q1 | q2) echo HEAP ;;
    *) echo HEAP ROCKSDB ;;
  esac
}

# proc_ticks PID...: utime + stime of the processes, in clock ticks (fields 14 and 15 of /proc/PID/stat,
# counted after the command name, which may hold spaces).
proc_ticks() {
  local pid total=0 t
  for pid in "$@"; do
    t="$(sed 's/^.*) //' "/proc/$pid/stat" | awk '{ print $12 + $13 }')" || fail "process $pid is gone"
    total=$((total + t))
  done
  echo "$total"
}

# busy_ticks: the machine's busy clock ticks (all but idle and iowait) from /proc/stat.
busy_ticks() {
  awk 'NR == 1 { s = 0; for (i = 2; i <= NF; i++) s += $i; print s - $5 - $6 }' /proc/stat
}

# wait_idle: waits (at most IDLE_WAIT_S) until the machine uses less than IDLE_CORES over 2 s.
wait_idle() {
  ((IDLE_WAIT_S > 0)) || return 0
  local deadline=$((SECONDS + IDLE_WAIT_S)) b0 b1 load said=0
  while :; do
    b0="$(busy_ticks)"
    sleep 2 # the sampling period itself
    b1="$(busy_ticks)"
    load="$(awk -v d=$((b1 - b0)) -v hz="$HZ" 'BEGIN { printf "%.2f", d / hz / 2 }')"
    if awk -v l="$load" -v max="$IDLE_CORES" 'BEGIN { exit !(l < max) }'; then
      ((said == 0)) || info "the machine is idle again ($load cores)"
      return 0
    fi
    if ((SECONDS >= deadline)); then
      info "the machine is still busy ($load cores) after ${IDLE_WAIT_S}s; measuring anyway (see FOREIGN)"
      return 0
    fi
    ((said == 1)) || info "waiting for the machine to be idle (now $load cores in use)..."
    said=1
    sleep 3
  done
}

# job_file QUERY P BACKEND EVENTS: the query's job file with every vertex at parallelism P, the nexmark
# source bounded to EVENTS, a checkpoint every CHECKPOINT_INTERVAL_MS and state on BACKEND.
job_file() {
  jq --argjson p "$2" --arg backend "$3" --argjson events "$4" --argjson interval "$CHECKPOINT_INTERVAL_MS" '
    .name += "_p\($p)_\($backend | ascii_downcase)"
    | .vertices |= map(.parallelism = $p | if has("nexmark") then .nexmark.events = $events else . end)
    | .config = ((.config // {}) + {state_backend: $backend, checkpointing: {interval_ms: $interval}})
  ' "$JOBS/$1.json"
}

# latency_p99 FILE: p99 in ms of the processing_latency_seconds buckets in FILE (one scrape, summed over the
# series), interpolated linearly within the bucket that holds it; "-" without observations.
latency_p99() {
  awk '{ match($0, /le="[^"]*"/); le = substr($0, RSTART + 4, RLENGTH - 5); counts[le] += $NF }
       END { for (le in counts) print le, counts[le] }' "$1" | sort -g | awk '
    { bound[NR] = $1; cum[NR] = $2; n = NR }
    END {
      if (n == 0 || cum[n] == 0) { print "-"; exit }
      target = 0.99 * cum[n]; lower = 0; below = 0
      for (i = 1; i <= n; i++) {
        if (cum[i] >= target) {
          if (bound[i] == "+Inf") { print ">" lower * 1000; exit }
          printf "%.1f\n", 1000 * (lower + (bound[i] - lower) * (cum[i] > below ? (target - below) / (cum[i] - below) : 1))
          exit
        }
        lower = bound[i]; below = cum[i]
      }
    }'
}

# run_sluice QUERY P BACKEND EVENTS TAG: one run; sets RUN to
# "job_id wall_ms tm_ticks foreign_ticks p99_ms checkpoints checkpoint_mean_ms" (in this shell, not a
# subshell's: a failure stops the script and the cluster).
run_sluice() {
  local query="$1" p="$2" backend="$3" events="$4" tag="$5"
  local file="$DIR/$tag.json" scrape="$DIR/$tag.latency.prom" job_id status details deadline
  local tm0 jm0 busy0 tm1 jm1 busy1 metrics start_ms end_ms answer completed mean
  job_file "$query" "$p" "$backend" "$events" >"$file"
  rm -f "$scrape"
  wait_idle
  tm0="$(proc_ticks "$tm_pid")" jm0="$(proc_ticks "$jm_pid")" busy0="$(busy_ticks)"
  job_id="$("$SLUICE" submit --quiet "$file")" || fail "cannot submit $file"
  deadline=$((SECONDS + RUN_TIMEOUT_S))
  while :; do
    status="$(jm_curl "/jobs/$job_id" | jq -r .status)" || fail "cannot read job $job_id"
    [[ "$status" == FINISHED ]] && break
    case "$status" in
      FAILED | CANCELED | CANCELLING | FAILING)
        "$SLUICE" status "$job_id" >&2 || true
        show_all_logs
        fail "job $job_id ($tag) ended $status"
        ;;
    esac
    ((SECONDS < deadline)) || fail "job $job_id ($tag) did not finish within ${RUN_TIMEOUT_S}s"
    # The task's series disappear when it ends: keep the last scrape that had them.
    metrics="$(curl -fsS "http://$TM_METRICS/metrics" | grep '^processing_latency_seconds_bucket{' \
      | grep -F "job=\"$job_id\"" | grep -F 'operator="sink"' || true)"
    [[ -z "$metrics" ]] || printf '%s\n' "$metrics" >"$scrape"
    sleep "$SCRAPE_INTERVAL_S"
  done
  tm1="$(proc_ticks "$tm_pid")" jm1="$(proc_ticks "$jm_pid")" busy1="$(busy_ticks)"
  details="$(jm_curl "/jobs/$job_id")"
  start_ms="$(jq -r .start_time <<<"$details")"
  end_ms="$(jq -r .end_time <<<"$details")"
  [[ "$start_ms" =~ ^[0-9]+$ && "$end_ms" =~ ^[0-9]+$ ]] || fail "job $job_id has no start or end time: $details"
  answer="$(jm_curl "/jobs/$job_id/checkpoints")" || fail "cannot read the checkpoints of job $job_id"
  completed="$(jq -r '.counts.completed // 0' <<<"$answer")"
  mean="$(jq -r '[.history[]? | select(.status == "COMPLETED") | .duration_ms] | if length == 0 then "-"
                 else (add / length | round) end' <<<"$answer")"
  local p99="-"
  [[ -s "$scrape" ]] && p99="$(latency_p99 "$scrape")"
  RUN="$job_id $((end_ms - start_ms)) $((tm1 - tm0)) $(((busy1 - busy0) - (tm1 - tm0) - (jm1 - jm0))) $p99 $completed $mean"
}

if [[ -n "${BENCHMARK_SKIP_BUILD:-}" ]]; then
  info "BENCHMARK_SKIP_BUILD is set: using the release binaries already in $BIN"
  for binary in sluice sluice-jobmanager sluice-taskmanager; do
    [[ -x "$BIN/$binary" ]] || fail "$BIN/$binary is missing; run without BENCHMARK_SKIP_BUILD to build it"
  done
else
  # Only the three binaries the cluster needs: every binary of the workspace with its debug line tables is
  # several GB more in the target directory.
  section "Building release binaries (sluice, sluice-jobmanager, sluice-taskmanager; CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
  cargo build --release --bin sluice --bin sluice-jobmanager --bin sluice-taskmanager
fi

# The sources the binaries were built from (other commits may land while the benchmark runs).
BUILD_COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo '?')"
git diff --quiet HEAD -- . ':!scripts' ':!docs' 2>/dev/null || BUILD_COMMIT+=" + uncommitted changes"

section "Starting a local cluster under $DIR (1 JobManager, 1 TaskManager with 2 slots)"
trap stop_cluster EXIT
rm -rf "$DIR"
mkdir -p "$DIR"
start_jobmanager "$BIN" "$DIR"
jm_pid="$START_PID"
start_taskmanager "$BIN" "$DIR" tm-1 2
tm_pid="$START_PID"
wait_for_taskmanagers "$SLUICE" 1 "$REGISTER_TIMEOUT_S"
TM_METRICS="$(json_string metrics <"$DIR/tm-1/taskmanager.addr")"
[[ -n "$TM_METRICS" ]] || fail "no metrics address in $DIR/tm-1/taskmanager.addr"

# One line per configuration: "query backend p events wall_ms tm_ticks foreign_ticks p99 ckpts ckpt_mean reps".
results=()
flink_events=()
for q in "${QUERY_LIST[@]}"; do
  for backend in $(backends "$q"); do
    events="${EVENTS:-$(default_events "$q" "$backend")}"
    flink_events+=("$q:$(tr '[:upper:]' '[:lower:]' <<<"$backend")=${EVENTS:-$(flink_default_events "$q" "$backend")}")
    for p in $PARALLELISMS; do
      section "$q, $backend state, parallelism $p: $events events, a checkpoint every ${CHECKPOINT_INTERVAL_MS} ms ($REPS runs)"
      runs=()
      for ((rep = 1; rep <= REPS; rep++)); do
        tag="$q-$(tr '[:upper:]' '[:lower:]' <<<"$backend")-p$p-r$rep"
        run_sluice "$q" "$p" "$backend" "$events" "$tag"
        read -r job_id wall_ms tm_ticks foreign_ticks p99 ckpts ckpt_mean <<<"$RUN"
        info "$(awk -v e="$events" -v ms="$wall_ms" -v t="$tm_ticks" -v f="$foreign_ticks" -v hz="$HZ" \
          -v p99="$p99" -v c="$ckpts" -v m="$ckpt_mean" -v job="$job_id" 'BEGIN {
          printf "run %s: %.2f s, %.0f events/s, TaskManager CPU %.2f s = %.0f events/s per core, p99 %s ms, %d checkpoints (mean %s ms), foreign CPU %.2f cores",
            job, ms / 1000, e * 1000 / ms, t / hz, (t > 0 ? e * hz / t : 0), p99, c, m, f / hz / (ms / 1000) }')"
        runs+=("$wall_ms $tm_ticks $foreign_ticks $p99 $ckpts $ckpt_mean")
      done
      # The median run by events/s (by wall time: the events are the same).
      median="$(printf '%s\n' "${runs[@]}" | sort -n -k1,1 | sed -n "$(((${#runs[@]} + 1) / 2))p")"
      results+=("$q $backend $p $events $median ${#runs[@]}")
    done
  done
done
stop_cluster

sluice_line() { # QUERY BACKEND P: the results line of that configuration
  local line
  for line in "${results[@]}"; do
    read -r lq lb lp _ <<<"$line"
    [[ "$lq $lb $lp" == "$1 $2 $3" ]] && echo "$line" && return 0
  done
}

flink_results=()
if ((FLINK == 1)); then
  section "Flink: the same queries through $FLINK_PEER ($REPS runs each)"
  [[ -f "$FLINK_PEER/bench.py" ]] || fail "no Flink peer at $FLINK_PEER (set FLINK_PEER)"
  if ! "$FLINKPEER/venv/bin/python" -c 'import pyflink' 2>/dev/null; then
    info "no PyFlink under $FLINKPEER: running $FLINK_PEER/setup.sh"
    "$FLINK_PEER/setup.sh" >&2 || fail "the Flink setup failed"
  fi
  mapfile -t flink_results < <(python3 -B scripts/nexmark/flink_bench.py --peer "$FLINK_PEER" --queries "$QUERIES" \
    --events "$(IFS=,; echo "${flink_events[*]}")" --p "$(tr ' ' ',' <<<"$PARALLELISMS")" --reps "$REPS" \
    --interval-ms "$CHECKPOINT_INTERVAL_MS" --idle-wait "$IDLE_WAIT_S" 2> >(tee "$DIR/flink.log" >&2) \
    | grep '^nexmark-flink ' || true)
  ((${#flink_results[@]} > 0)) || fail "the Flink runs printed no results (see $DIR/flink.log)"
fi

flink_field() { # QUERY BACKEND P FIELD: a field of Flink's line for that configuration
  local line backend
  backend="$(tr '[:upper:]' '[:lower:]' <<<"$2")"
  for line in "${flink_results[@]}"; do
    if [[ " $line " == *" query=$1 backend=$backend p=$3 "* ]]; then
      sed -n "s/.* $4=\([^ ]*\).*/\1/p" <<<"$line"
      return 0
    fi
  done
}

section "Results"
printf '    %s, %s cores (%s), %s, Sluice at commit %s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')" "$(nproc)" \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" "$(free -g | awk '/^Mem:/ { print $2 " GiB" }')" \
  "$BUILD_COMMIT"
printf '    %s; a checkpoint every %s ms; median of %s runs\n\n' "$COMMAND_LINE" "$CHECKPOINT_INTERVAL_MS" "$REPS"
printf '    Sluice (events: Nexmark events of all kinds; CPU: the TaskManager process; FOREIGN: other processes, cores)\n'
printf '    %-5s %-8s %2s %11s %7s %11s %7s %6s %13s %12s %8s %6s %9s %8s\n' QUERY STATE P EVENTS WALL_S EVENTS/S CPU_S \
  CORES EVENTS/S/CORE "GOAL/CORE" P99_MS CKPTS CKPT_MS FOREIGN
for line in "${results[@]}"; do
  read -r q backend p events wall_ms tm_ticks foreign_ticks p99 ckpts ckpt_mean runs <<<"$line"
  awk -v q="$q" -v b="$backend" -v p="$p" -v e="$events" -v ms="$wall_ms" -v t="$tm_ticks" -v f="$foreign_ticks" \
    -v hz="$HZ" -v p99="$p99" -v c="$ckpts" -v m="$ckpt_mean" -v goal="$(goal_per_core "$q")" 'BEGIN {
    s = ms / 1000; cpu = t / hz; core = (cpu > 0 ? e / cpu : 0)
    met = (goal == "-" ? "-" : (core >= goal ? "met " : "MISSED ") goal / 1000 "K")
    printf "    %-5s %-8s %2s %11d %7.2f %11.0f %7.2f %6.2f %13.0f %12s %8s %6d %9s %8.2f\n",
      q, b, p, e, s, e / s, cpu, cpu / s, core, met, p99, c, m, f / hz / s }'
done

if ((FLINK == 1)); then
  printf '\n    Sluice and Flink side by side, on the rows each query reads (bids; persons and auctions for q3, q8;'
  printf ' auctions and bids for q4: Sluice: 92 %%, 8 %%, 98 %% of its events; Flink: datagen rows); per core: per CPU'
  printf ' second of the TaskManager process\n'
  printf '    %-5s %-8s %2s %10s %10s %12s %12s %12s %12s %6s %10s %7s %6s %9s %6s %9s\n' QUERY STATE P S_EVENTS F_EVENTS \
    SLUICE_ROW/S FLINK_ROW/S SLUICE/CORE FLINK/CORE RATIO "RATIO/CORE" "GOAL_3X" S_CKPT S_CKPT_MS F_CKPT F_CKPT_MS
  for line in "${results[@]}"; do
    read -r q backend p events wall_ms tm_ticks _ _ ckpts ckpt_mean _ <<<"$line"
    f_events="$(flink_field "$q" "$backend" "$p" events)"
    f_rate="$(flink_field "$q" "$backend" "$p" rows_per_s)"
    f_core="$(flink_field "$q" "$backend" "$p" rows_per_core)"
    f_ckpts="$(flink_field "$q" "$backend" "$p" ckpts)"
    f_ckpt_ms="$(flink_field "$q" "$backend" "$p" ckpt_ms_mean)"
    awk -v q="$q" -v b="$backend" -v p="$p" -v e="$events" -v fe="${f_events:--}" -v n="$(input_rows "$q" "$events")" \
      -v ms="$wall_ms" -v t="$tm_ticks" -v hz="$HZ" \
      -v fr="${f_rate:-0}" -v fc="${f_core:-0}" -v c="$ckpts" -v m="$ckpt_mean" -v fk="${f_ckpts:--}" \
      -v fm="${f_ckpt_ms:--}" 'BEGIN {
      rate = n * 1000 / ms; core = (t > 0 ? n * hz / t : 0)
      printf "    %-5s %-8s %2s %10d %10s %12.0f %12s %12.0f %12s %6s %10s %7s %6d %9s %6s %9s\n", q, b, p, e, fe, rate,
        (fr > 0 ? fr : "FAILED"), core, (fc > 0 ? fc : "-"),
        (fr > 0 ? sprintf("%.2f", rate / fr) : "-"), (fc > 0 ? sprintf("%.2f", core / fc) : "-"),
        (fc > 0 ? (core / fc >= 3 ? "met" : "MISSED") : "-"), c, m, fk, fm }'
  done
fi
