#!/usr/bin/env bash
# The web UI in a real browser (issue 22): starts a local cluster on loopback (one JobManager with a short
# heartbeat timeout, two TaskManagers with small network buffers) and runs tests/browser/ui.test.mjs, which drives
# Debian's Chromium through playwright-core: log in, submit a job through the page, watch its records/s, its graph,
# back-pressure and bottleneck verdict, take a savepoint, kill -9 a TaskManager and find the restart in the
# timeline. Every process it starts is stopped by PID on exit, pass or fail.
#
# Usage: scripts/browser-check.sh [--screenshot] [--keep-going]
#   --screenshot  also save the job page to docs/images/job-page.png when the test passes (for the README)
#   --keep-going  run every step of the test even after one failed (by default a failure skips the rest)
# Environment:
#   CARGO_TARGET_DIR        where the binaries are (default ~/.cache/sluice/target; this script does not build:
#                           scripts/test.sh builds first, or run `cargo build --bins`)
#   BROWSER_CHECK_DIR       the cluster's files and logs (default data/browser-check, emptied first)
#   BROWSER_ARTIFACTS_DIR   screenshots, HTML and console of the page on failure (default target/browser-artifacts)
#   SLUICE_UI_DIR           passed to the JobManager: serve the UI files from this directory instead of the binary
#   BROWSER_CHECK_BUDGET_S  the browser test's budget: no wait runs past it (default 170); the process is killed
#                           30 s after it
#
# What it installs when missing (apt-get, root): chromium, nodejs, npm. playwright-core comes from the npm registry
# at the version package-lock.json pins (`npm ci`, cache under ~/.cache/sluice/npm); it never downloads a browser.
set -euo pipefail

cd "$(dirname "$0")/.."
source scripts/lib.sh

readonly TEST_DIR=tests/browser
readonly JOB_FILE="$TEST_DIR/slow_sink_job.json"
readonly SCREENSHOT_PATH=docs/images/job-page.png
readonly DIR="${BROWSER_CHECK_DIR:-data/browser-check}"
readonly ARTIFACTS_DIR="${BROWSER_ARTIFACTS_DIR:-target/browser-artifacts}"
# How long the TaskManagers may take to register, in seconds.
readonly REGISTER_TIMEOUT_S=60
# The browser test's budget: its waits (see TIMEOUT in ui.test.mjs) never run past it, so a stuck run fails a step
# with a screenshot; the process itself is killed TEST_GRACE_S later should even that not happen.
readonly TEST_BUDGET_S="${BROWSER_CHECK_BUDGET_S:-170}"
readonly TEST_GRACE_S=30
# A killed TaskManager is LOST after this long without a heartbeat (the default, 5 s, would only slow the test).
readonly HEARTBEAT_TIMEOUT_MS=3000
readonly CHROMIUM_BIN=/usr/bin/chromium

screenshot=""
keep_going=0
for arg in "$@"; do
  case "$arg" in
    --screenshot) screenshot="$SCREENSHOT_PATH" ;;
    --keep-going) keep_going=1 ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    *) fail "unknown argument '$arg' (usage: scripts/browser-check.sh [--screenshot] [--keep-going])" ;;
  esac
done

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}"
readonly BIN="$CARGO_TARGET_DIR/debug"

# The browser test's process (`timeout`, which passes a TERM on to node; playwright then closes its Chromium).
test_pid=""

# stop_everything: the EXIT trap: the browser test if it still runs, then every process start_process started,
# by PID.
stop_everything() {
  local status=$?
  if [[ -n "$test_pid" ]] && kill -0 "$test_pid" 2>/dev/null; then
    kill -TERM "$test_pid" 2>/dev/null || true
    wait "$test_pid" 2>/dev/null || true
  fi
  stop_cluster
  if ((status != 0)); then
    info "cluster logs: $DIR/*.log; page artifacts (if the browser got that far): $ARTIFACTS_DIR"
  fi
}
trap stop_everything EXIT

section "Tools (chromium, nodejs, npm: installed with apt-get only when missing)"
missing=()
[[ -x "$CHROMIUM_BIN" ]] || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if ((${#missing[@]} > 0)); then
  info "installing: ${missing[*]}"
  sudo=()
  if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null || fail "missing packages (${missing[*]}) and not root; install them and rerun"
    sudo=(sudo)
  fi
  "${sudo[@]}" apt-get update -qq || fail "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    || fail "apt-get install ${missing[*]} failed"
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
((node_major >= 18)) || fail "node $(node --version) is too old: playwright-core needs 18 or newer"
info "$("$CHROMIUM_BIN" --version 2>/dev/null | tail -n 1), node $(node --version), npm $(npm --version)"

section "playwright-core (npm ci in $TEST_DIR)"
# npm ci installs exactly package-lock.json; the cache lives outside the clone so CI runs are warm.
npm ci --prefix "$TEST_DIR" --cache "$HOME/.cache/sluice/npm" --no-audit --no-fund --loglevel=error >/dev/null \
  || fail "npm ci in $TEST_DIR failed"
info "playwright-core $(node -p "require('./$TEST_DIR/node_modules/playwright-core/package.json').version")"

section "A local cluster under $DIR"
for binary in sluice-jobmanager sluice-taskmanager sluice; do
  [[ -x "$BIN/$binary" ]] || fail "no $BIN/$binary: build first (cargo build --bins)"
done
rm -rf "$DIR" "$ARTIFACTS_DIR"
mkdir -p "$DIR"
# The JobManager reads HEARTBEAT_TIMEOUT from its environment; start_process passes the environment on.
HEARTBEAT_TIMEOUT="$HEARTBEAT_TIMEOUT_MS" start_jobmanager "$BIN" "$DIR"
info "JobManager http://$JM_REST (log $DIR/jobmanager.log)${SLUICE_UI_DIR:+; UI files from $SLUICE_UI_DIR}"
# Small network buffers keep little data in flight behind the throttled sink, so a checkpoint barrier (and the
# savepoint the test takes) passes the back-pressured channels in seconds rather than minutes.
export BUFFER_SIZE=2048 BUFFER_POOL_SIZE=1 CREDIT_INITIAL=1 OUTPUT_QUEUE_BUFFERS=1
pids_json=""
for id in tm-1 tm-2; do
  start_taskmanager "$BIN" "$DIR" "$id" 2
  pids_json+="${pids_json:+,}\"$id\":$START_PID"
  info "TaskManager $id: pid $START_PID (log $DIR/$id.log)"
done
unset BUFFER_SIZE BUFFER_POOL_SIZE CREDIT_INITIAL OUTPUT_QUEUE_BUFFERS
wait_for_taskmanagers "$BIN/sluice" 2 "$REGISTER_TIMEOUT_S"

section "The browser test (node --test $TEST_DIR/ui.test.mjs)"
started=$SECONDS
status=0
SLUICE_UI_URL="http://$JM_REST" \
  SLUICE_TOKEN_FILE="$SLUICE_TOKEN_FILE" \
  SLUICE_JOB_FILE="$JOB_FILE" \
  SLUICE_TASKMANAGER_PIDS="{$pids_json}" \
  SLUICE_ARTIFACTS_DIR="$ARTIFACTS_DIR" \
  SLUICE_SCREENSHOT="$screenshot" \
  SLUICE_BROWSER_KEEP_GOING="$keep_going" \
  SLUICE_BROWSER_BUDGET_S="$TEST_BUDGET_S" \
  CHROMIUM="$CHROMIUM_BIN" \
  timeout --kill-after=10 "$((TEST_BUDGET_S + TEST_GRACE_S))" node --test --test-reporter=spec "$TEST_DIR/ui.test.mjs" &
test_pid=$!
wait "$test_pid" || status=$?
test_pid=""
# (bash reports the TaskManager the test killed with SIGKILL as "Killed" above: that is the test, not a crash.)
info "the browser test took $((SECONDS - started)) s"
if ((status != 0)); then
  ((status == 124)) && info "it was killed $((TEST_BUDGET_S + TEST_GRACE_S)) s after it started"
  show_all_logs
  fail "the browser test failed; screenshots of the page are in $ARTIFACTS_DIR"
fi
[[ -n "$screenshot" ]] && info "the job page is in $screenshot"
ok "the web UI passed in a real browser"
