#!/usr/bin/env bash
# Tests deploy/monitoring against a real Prometheus scraping a real cluster (issue 22):
#   1. promtool checks the alert rules and both Prometheus configurations (compose, Kubernetes);
#   2. a local cluster (a JobManager with a read-only token for Prometheus, two TaskManagers) and a Kafka broker
#      (nisshi) on loopback run jobs that produce every series the dashboards and rules read
#      (scripts/monitoring/jobs): a windowed pipeline checkpointing every second into a throttled sink
#      (back-pressure, watermark lag, state), a job whose checkpoints time out and that restarts each time
#      (failed checkpoints, restarts, recovery phases), and a producer and a slower consumer on one topic
#      (Kafka consumer lag);
#   3. Prometheus (Debian's package, installed when missing) runs prometheus-kubernetes.yml with its Kubernetes
#      discovery replaced by the pods of deploy/k8s/base pointing at that cluster (scripts/monitoring/
#      prometheus_config.py), so the production relabelling decides what is scraped and how it is labelled; it
#      must scrape exactly the JobManager and the TaskManagers, each up;
#   4. every expression of every dashboard panel, dashboard variable and alert rule is evaluated through
#      GET /api/v1/query until each returns data (scripts/monitoring/evaluate.py says what counts); the alerts the
#      jobs provoke must be pending or firing with their annotations rendered.
# Every process it starts is stopped by PID on exit, pass or fail; every wait has a named bound. About 15 s with
# warm binaries on an idle machine when everything passes; an expression without data waits out DATA_TIMEOUT_S.
# The binaries come from SLUICE_BIN_DIR, else $CARGO_TARGET_DIR/debug (build them first); nisshi from
# SLUICE_NISSHI, else ~/.cache/sluice/tools/bin (scripts/install-test-tools.sh installs it).
#
# Usage: scripts/monitoring-check.sh            (from anywhere; exit 0 when everything passes)
#        MONITORING_HOLD_S=600 scripts/monitoring-check.sh   (then query the cluster's Prometheus by hand)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

# The helpers import each other: no __pycache__ left in the work tree.
export PYTHONDONTWRITEBYTECODE=1

readonly CACHE_DIR="${HOME}/.cache/sluice"
readonly VENV="${CACHE_DIR}/venv-deploy"
readonly BIN_DIR="${SLUICE_BIN_DIR:-${CARGO_TARGET_DIR:-${CACHE_DIR}/target}/debug}"
readonly NISSHI="${SLUICE_NISSHI:-${CACHE_DIR}/tools/bin/nisshi}"
readonly MONITORING=deploy/monitoring
readonly DASHBOARDS=("${MONITORING}"/grafana/dashboards/*.json)
readonly JOBS_DIR=scripts/monitoring/jobs
# The topic the Kafka jobs share, and where their job files name the broker (replaced by the test broker).
readonly TOPIC=monitoring-orders
readonly TOPIC_PARTITIONS=2
readonly JOB_FILE_BROKER=127.0.0.1:9092
# The alerts the jobs provoke: failing_checkpoints.json fails every checkpoint and restarts; pipeline.json's
# window waits on its throttled sink most of the time.
readonly EXPECTED_ALERTS=SluiceCheckpointsFailing,SluiceJobRestarting,SluiceBackpressureHigh

# Bounds of the waits, in seconds.
readonly REGISTER_TIMEOUT_S=60       # the TaskManagers register
readonly KAFKA_START_TIMEOUT_S=30    # the broker takes the topic
readonly JOBS_RUNNING_TIMEOUT_S=90   # every job has run (debug binaries deploy slowly on 2 cores)
readonly PROMETHEUS_START_TIMEOUT_S=30
readonly TARGETS_TIMEOUT_S=30        # discovery and the first scrapes
# Series appear as the jobs run: a window fires, checkpoints complete and fail, the failing job restarts three
# times (2 s apart), pending alerts.
readonly DATA_TIMEOUT_S="${MONITORING_DATA_TIMEOUT_S:-120}"
# How long to keep the cluster and Prometheus up after the evaluation, pass or fail, to query them by hand while
# editing a dashboard or a rule (Prometheus's address is printed above); 0 in CI.
readonly HOLD_S="${MONITORING_HOLD_S:-0}"

work=""
passed=0
finish() {
  stop_cluster
  if ((passed)); then
    rm -rf "${work}"
  elif [[ -n "${work}" ]]; then
    printf '    logs and configuration kept in %s\n' "${work}" >&2
  fi
}
trap finish EXIT

# install_prometheus: Debian's prometheus package (the server and promtool), when either is missing; like
# install_system_packages (scripts/lib.sh), apt-get as root or through sudo. The package's service is not used.
install_prometheus() {
  if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
    return 0
  fi
  info "installing Debian's prometheus package (the server and promtool)"
  local sudo=()
  if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null \
      || fail "prometheus and promtool are missing and this is not root: apt-get install prometheus"
    sudo=(sudo)
  fi
  "${sudo[@]}" apt-get update -qq || fail "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
    || fail "apt-get install prometheus failed"
}

# wait_for_http URL TIMEOUT_S WHAT: waits until URL answers 2xx, checking that every started process lives.
wait_for_http() {
  local url="$1" timeout_s="$2" what="$3"
  local deadline=$((SECONDS + timeout_s))
  until curl -fsS -o /dev/null "$url" 2>/dev/null; do
    check_processes
    ((SECONDS < deadline)) || { show_all_logs; fail "$what: $url did not answer within ${timeout_s}s"; }
    sleep 0.2
  done
}

# wait_for_jobs TIMEOUT_S ID...: waits until each job is RUNNING, or RESTARTING after it ran (the failing one).
wait_for_jobs() {
  local timeout_s="$1"
  shift
  local deadline=$((SECONDS + timeout_s)) id status waiting
  while :; do
    check_processes
    waiting=()
    for id in "$@"; do
      status="$("${BIN_DIR}/sluice" status "$id" --json 2>/dev/null | json_string status || true)"
      [[ "$status" == RUNNING || "$status" == RESTARTING ]] || waiting+=("$id ${status:-?}")
    done
    ((${#waiting[@]} == 0)) && return 0
    if ((SECONDS >= deadline)); then
      "${BIN_DIR}/sluice" list >&2 || true
      show_all_logs
      fail "jobs not running after ${timeout_s}s: ${waiting[*]}"
    fi
    sleep 0.5
  done
}

section "Tools"
install_prometheus
if ! "${VENV}/bin/python" -c 'import yaml' 2>/dev/null; then
  info "installing PyYAML into ${VENV}"
  python3 -m venv "${VENV}"
  "${VENV}/bin/pip" install --quiet pyyaml
fi
readonly PYTHON="${VENV}/bin/python"
[[ -x "${NISSHI}" ]] \
  || fail "no Kafka broker at ${NISSHI}: scripts/install-test-tools.sh installs nisshi there (or set SLUICE_NISSHI)"
for binary in sluice sluice-jobmanager sluice-taskmanager; do
  [[ -x "${BIN_DIR}/${binary}" ]] || fail "${BIN_DIR}/${binary} is missing: build the workspace or set SLUICE_BIN_DIR"
done
"${PYTHON}" scripts/monitoring/promql.py || fail "scripts/monitoring/promql.py: its doctests fail"
ok "$(prometheus --version 2>&1 | head -n 1); binaries in ${BIN_DIR}; nisshi ${NISSHI}"

section "promtool: alert rules and Prometheus configurations"
promtool check rules "${MONITORING}/alerts.yml" || fail "${MONITORING}/alerts.yml: promtool check rules refused it"
promtool check config "${MONITORING}/prometheus.yml" \
  || fail "${MONITORING}/prometheus.yml: promtool check config refused it"
if output=$(promtool check config "${MONITORING}/prometheus-kubernetes.yml" 2>&1); then
  printf '%s\n' "$output"
elif grep -q 'field kubernetes_sd_configs not found' <<<"$output"; then
  info "${MONITORING}/prometheus-kubernetes.yml: this promtool is built without Kubernetes discovery (Debian's);"
  info "  checked below with the discovery replaced by the manifests' pods"
else
  printf '%s\n' "$output" >&2
  fail "${MONITORING}/prometheus-kubernetes.yml: promtool check config refused it"
fi

section "A local cluster and a Kafka broker"
work="$(mktemp -d /tmp/sluice-monitoring.XXXXXX)"
# A read-only token for Prometheus (the JobManager's /metrics needs one: METRICS_AUTH=read, the default).
od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"${work}/prometheus.token"
READ_TOKEN_FILE="${work}/prometheus.token" start_jobmanager "${BIN_DIR}" "${work}"
info "JobManager: REST http://${JM_REST}; log ${work}/jobmanager.log"
for id in tm-1 tm-2; do
  # A short drain: on exit the cluster stops as a whole, there is nowhere to move the jobs to.
  TM_DRAIN_TIMEOUT_MS=1000 start_taskmanager "${BIN_DIR}" "${work}" "$id" 4
done
wait_for_taskmanagers "${BIN_DIR}/sluice" 2 "${REGISTER_TIMEOUT_S}"
kafka_port="$(free_port 19092)" || fail "no free port for the Kafka broker"
start_process nisshi "${work}/nisshi.log" env -C "${work}" "${NISSHI}" broker \
  --listener-url "tcp://127.0.0.1:${kafka_port}" --advertised-listener-url "tcp://127.0.0.1:${kafka_port}" \
  --storage-engine memory://nisshi/
deadline=$((SECONDS + KAFKA_START_TIMEOUT_S))
until "${NISSHI}" topic create --broker "tcp://127.0.0.1:${kafka_port}" --partitions "${TOPIC_PARTITIONS}" --silent \
  "${TOPIC}" >>"${work}/topic.log" 2>&1; do
  check_processes
  if ((SECONDS >= deadline)); then
    cat "${work}/topic.log" >&2
    fail "cannot create topic ${TOPIC} within ${KAFKA_START_TIMEOUT_S}s"
  fi
  sleep 0.5
done
ok "2 TaskManagers x 4 slots; Kafka on 127.0.0.1:${kafka_port}, topic ${TOPIC} (${TOPIC_PARTITIONS} partitions)"

section "Jobs that produce every series the dashboards and rules read"
mkdir -p "${work}/jobs"
job_ids=()
for file in "${JOBS_DIR}"/*.json; do
  sed "s/${JOB_FILE_BROKER}/127.0.0.1:${kafka_port}/g" "$file" >"${work}/jobs/$(basename "$file")"
  id="$("${BIN_DIR}/sluice" submit --quiet "${work}/jobs/$(basename "$file")")" \
    || { show_all_logs; fail "cannot submit ${file}"; }
  job_ids+=("$id")
  info "$(basename "$file" .json): job ${id}"
done
wait_for_jobs "${JOBS_RUNNING_TIMEOUT_S}" "${job_ids[@]}"
ok "${#job_ids[@]} jobs running"

section "Prometheus scraping the cluster through the Kubernetes configuration"
mkdir -p "${work}/prometheus"
"${PYTHON}" scripts/monitoring/prometheus_config.py "${work}/prometheus" "${MONITORING}/prometheus-kubernetes.yml" \
  "${MONITORING}/alerts.yml" deploy/k8s/base "${work}" "${work}/prometheus.token" >"${work}/expected-targets" \
  || fail "cannot derive the test configuration from ${MONITORING}/prometheus-kubernetes.yml"
promtool check config "${work}/prometheus/prometheus.yml" >/dev/null \
  || fail "prometheus-kubernetes.yml with file discovery in place of Kubernetes's: promtool check config refused it"
prometheus_port="$(free_port 19090)" || fail "no free port for Prometheus"
readonly PROMETHEUS_URL="http://127.0.0.1:${prometheus_port}"
start_process prometheus "${work}/prometheus.log" prometheus --config.file="${work}/prometheus/prometheus.yml" \
  --storage.tsdb.path="${work}/prometheus/data" --web.listen-address="127.0.0.1:${prometheus_port}"
wait_for_http "${PROMETHEUS_URL}/-/ready" "${PROMETHEUS_START_TIMEOUT_S}" "Prometheus did not start"
info "Prometheus ${PROMETHEUS_URL}, scraping every second; log ${work}/prometheus.log"
"${PYTHON}" scripts/monitoring/targets.py "${PROMETHEUS_URL}" "${work}/expected-targets" \
  --deadline-s "${TARGETS_TIMEOUT_S}" || fail "Prometheus does not scrape exactly the cluster's processes"
# Prometheus's naming conventions (a counter ends in _total, a gauge does not, ...) on what each process exposes:
# docs/metrics.md promises them, so a new metric that breaks them fails here (before anyone queries it).
tm_metrics="$(json_string metrics <"${work}/tm-1/taskmanager.addr")"
lint="$( {
  curl -fsS -H @<(printf 'Authorization: Bearer %s\n' "$(cat "${work}/prometheus.token")") "http://${JM_REST}/metrics" \
    | promtool check metrics 2>&1 | sed 's/^/JobManager: /'
  curl -fsS "http://${tm_metrics}/metrics" | promtool check metrics 2>&1 | sed 's/^/TaskManager: /'
} || true)"
if [[ -z "${lint}" ]]; then
  ok "the JobManager's and a TaskManager's /metrics pass promtool check metrics"
else
  while IFS= read -r line; do info "  ${line}"; done <<<"${lint}"
  fail "promtool check metrics: the metrics above break Prometheus's naming conventions (docs/metrics.md)"
fi

section "Every dashboard and alert expression, evaluated by Prometheus"
evaluated=0
"${PYTHON}" scripts/monitoring/evaluate.py "${PROMETHEUS_URL}" "${MONITORING}/alerts.yml" "${DASHBOARDS[@]}" \
  --deadline-s "${DATA_TIMEOUT_S}" --expect-alerts "${EXPECTED_ALERTS}" || evaluated=$?
if ((HOLD_S > 0)); then
  info "holding the cluster and ${PROMETHEUS_URL} for ${HOLD_S}s (MONITORING_HOLD_S)"
  sleep "${HOLD_S}"
fi
if ((evaluated != 0)); then
  "${BIN_DIR}/sluice" list >&2 || true
  fail "dashboard or alert expressions without data (listed above)"
fi

passed=1
section "Done"
ok "deploy/monitoring passes against a real Prometheus and cluster in ${SECONDS}s"
