#!/usr/bin/env bash
# The whole test suite, as CI runs it (`.ci/run` executes this file), on a fresh Debian machine or a
# developer's checkout:
#   1. system packages the build needs, installed with apt only when missing (needs root);
#   2. the Rust toolchain (rustup, minimal profile, stable) with rustfmt and clippy, only when missing;
#   3. cargo fmt --check; 4. cargo build --workspace --all-targets (the integration tests start the binaries),
#   linted as it builds: clippy-driver compiles the workspace's own crates (see "Lint while building");
#   5. the test tools (scripts/install-test-tools.sh: cargo-nextest, the S3 server s3s-fs, the Kafka broker
#   nisshi, each built once), a throwaway PostgreSQL server (the metadata-store tests use it), then
#   cargo nextest run --workspace (cargo test when nextest is missing), the Kafka tests last;
#   6. the deployment manifests, the monitoring configuration against a real Prometheus, the web UI in a real
#   Chromium, and a bounded fuzzing run.
# The test tools and the fuzz targets build in the background, at a lower CPU priority, from the start (see
# "Background builds").
# Every step runs even after an earlier one failed, so one run shows every problem. The exit code is the
# test suite's when it failed, else 1 if the format or lint check failed, else 0. The summary ends with how
# long each phase took.
#
# The cargo target directory lives outside the clone (CARGO_TARGET_DIR, default ~/.cache/sluice/target)
# so repeated runs from fresh clones build incrementally.
set -uo pipefail

cd "$(dirname "$0")/.."
source scripts/lib.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-auto}"
# A panicking test shows where it panicked.
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

# machine_cpu_seconds: the CPU time the whole machine has spent busy since it booted, all cores, in seconds
# (/proc/stat: user, nice, system, irq, softirq, steal); 0 where there is no /proc/stat.
machine_cpu_seconds() {
  awk -v hz="$(getconf CLK_TCK 2>/dev/null || echo 100)" \
    '/^cpu / { print int(($2 + $3 + $4 + $7 + $8 + $9) / hz); found = 1 } END { if (!found) print 0 }' \
    /proc/stat 2>/dev/null || echo 0
}
readonly CORES="$(nproc 2>/dev/null || echo 1)"

# Phase durations, printed in the summary: names, seconds, and how busy the machine was meanwhile (CPU seconds
# of all its processes, out of seconds x cores), in order. A cold run is bound by CPU: the background builds
# fill what a phase leaves idle, and this shows how much was left.
PHASE_NAMES=()
PHASE_SECONDS=()
PHASE_CPU=()
phase_started=$SECONDS
phase_cpu_started="$(machine_cpu_seconds)"
# phase_done NAME: records how long the phase that just ended took (since the previous phase ended).
phase_done() {
  local cpu_now
  cpu_now="$(machine_cpu_seconds)"
  PHASE_NAMES+=("$1")
  PHASE_SECONDS+=($((SECONDS - phase_started)))
  PHASE_CPU+=($((cpu_now - phase_cpu_started)))
  phase_started=$SECONDS
  phase_cpu_started=$cpu_now
}

section "System packages"
install_system_packages
phase_done "system packages"

section "Rust toolchain"
install_rust
use_fast_debug_cxx
info "CARGO_TARGET_DIR=$CARGO_TARGET_DIR"
phase_done "Rust toolchain"

# Background builds. A cold cache has more to build than the workspace: the test tools
# (scripts/install-test-tools.sh; the test runner and S3 server in one job, the Kafka broker in another) and
# the fuzz targets (scripts/fuzz.sh --build-only, their own target directory and flags, so nothing is shared
# with the workspace build). Run one after another, they took about 30 of a cold run's minutes on 2 cores,
# while the workspace build leaves CPU idle whenever one crate is all that can compile, and the tests leave
# it idle while they wait on their clusters. So they start now, at a lower CPU priority (nice 10 for the
# tools, 19 for the fuzz build): they take what the build, and then the tests, leave idle, and each step
# that needs one waits for it (the Kafka tests run after the others, for the broker). Each runs in a session of its
# own, so that a run that ends early (the build failed, an interrupt) stops it by its process group. A new
# session is also a new scheduling group where the kernel groups by session (autogroup, on by default in
# Debian): there a niceness orders processes only within their group, and the groups share the CPU equally
# (the warm build took 185 s instead of 105 beside a fuzz build at nice 19). So the background session sets
# its group's niceness too (/proc/self/autogroup), and yields to the build as a whole.
readonly TOOLS_NICENESS=10
readonly FUZZ_BUILD_NICENESS=19
background_dir="$(mktemp -d)"
declare -A BACKGROUND_PID=()
# start_background NAME NICENESS COMMAND...: starts COMMAND in the background, its output in a log file.
start_background() {
  local name="$1" niceness="$2"
  shift 2
  setsid nice -n "$niceness" bash -c '
      seconds_file="$0" niceness="$1"
      shift
      # Absent without autogroup: the niceness above is then enough.
      echo "$niceness" 2>/dev/null >/proc/self/autogroup
      started=$SECONDS
      "$@"
      status=$?
      # Its CPU time: user and system of the command and everything it waited for (the second line of the
      # builtin times, written to a file: in a pipe it would run in a subshell, which has no children).
      times >"$seconds_file"
      cpu=$(awk '\''NR == 2 { for (i = 1; i <= NF; i++) { split($i, t, "m"); s += t[1] * 60 + t[2] } }
        END { print int(s) }'\'' "$seconds_file")
      echo "$((SECONDS - started)) s, CPU $cpu s" >"$seconds_file"
      exit "$status"' \
    "$background_dir/$name.seconds" "$niceness" "$@" >"$background_dir/$name.log" 2>&1 &
  BACKGROUND_PID[$name]=$!
  info "$name: building in the background (nice $niceness)"
}
# wait_background NAME: waits for NAME to end and returns its exit status; its log is printed when it failed
# or when SHOW is "show".
wait_background() {
  local name="$1" show="${2:-}" status=0
  wait "${BACKGROUND_PID[$name]}" || status=$?
  unset "BACKGROUND_PID[$name]"
  if ((status != 0)) || [[ "$show" == show ]]; then
    cat "$background_dir/$name.log"
  fi
  BACKGROUND_NAMES+=("$name")
  BACKGROUND_SECONDS+=("$(cat "$background_dir/$name.seconds" 2>/dev/null || echo '?')")
  return "$status"
}
BACKGROUND_NAMES=()
BACKGROUND_SECONDS=()
cleanup() {
  local name
  for name in "${!BACKGROUND_PID[@]}"; do
    kill -TERM -- "-${BACKGROUND_PID[$name]}" 2>/dev/null || true
  done
  stop_postgres
  rm -rf "$background_dir"
}
trap cleanup EXIT
start_background "test runner and S3 server" "$TOOLS_NICENESS" bash scripts/install-test-tools.sh cargo-nextest s3s-fs
start_background "Kafka broker" "$TOOLS_NICENESS" bash scripts/install-test-tools.sh nisshi
start_background "fuzz build" "$FUZZ_BUILD_NICENESS" bash scripts/fuzz.sh --build-only

section "Format (cargo fmt --all --check)"
fmt_status=0
cargo fmt --all --check || fmt_status=$?
phase_done "format"

# Lint while building. `cargo clippy` is `cargo check` with clippy's lints: run after `cargo build`, it
# compiles every dependency a second time in check mode (7 minutes of a cold run on 2 cores). Instead,
# clippy-driver is the compiler of the workspace's own crates (RUSTC_WORKSPACE_WRAPPER): it builds them as
# rustc does and lints them in the same pass, and dependencies are built once, by rustc. The test step runs
# with the same environment, so it reuses every artifact. Warnings are counted rather than denied, so a
# lint problem still lets the tests run (every step runs); cargo replays a crate's cached warnings when
# it is up to date, so the count is complete on an incremental run too.
clippy_driver="$(command -v clippy-driver || true)"
if [[ -n "$clippy_driver" ]]; then
  export RUSTC_WORKSPACE_WRAPPER="$clippy_driver"
else
  info "clippy-driver not found: building without lints (the lint check fails)"
fi

# --all-targets: the binaries are built with the same (dev-dependency-unified) features as the tests, so the
# test step reuses every artifact instead of building DataFusion a second time.
section "Build and lint (cargo build --workspace --all-targets, clippy-driver for the workspace's crates)"
build_status=0
build_log="$(mktemp)"
cargo build --workspace --all-targets 2>&1 | tee "$build_log" || build_status=$?
clippy_status=0
if [[ -z "$clippy_driver" ]]; then
  clippy_status=1
elif ((build_status == 0)) && grep -Eq 'generated [0-9]+ warnings?' "$build_log"; then
  info "the build has warnings (listed above); the lint check fails"
  clippy_status=1
fi
rm -f "$build_log"
phase_done "build and lint"

section "Test runner and S3 server (scripts/install-test-tools.sh, in the background since the start)"
tools_status=0
wait_background "test runner and S3 server" show || tools_status=$?
phase_done "test runner and S3 server (waiting)"

# The two test binaries that start a Kafka broker run last, once the broker's build (in the background, and
# the longest of the tools) is done: the other tests do not wait for it.
readonly KAFKA_TESTS='binary(kafka) | binary(kafka_tls)'
# record_test_status STATUS: the first failure's code is the suite's.
record_test_status() { ((test_status != 0)) || test_status=$1; }
section "Tests"
test_status=0
have_nextest=0
cargo nextest --version >/dev/null 2>&1 && have_nextest=1
((build_status != 0)) || start_postgres
if ((build_status != 0)); then
  info "skipped: the build failed"
  test_status=$build_status
elif ((have_nextest)); then
  info "cargo nextest run --workspace -E 'not ($KAFKA_TESTS)'"
  cargo nextest run --workspace --no-fail-fast -E "not ($KAFKA_TESTS)" || record_test_status $?
fi
phase_done "tests"

section "Kafka broker (scripts/install-test-tools.sh nisshi, in the background since the start)"
wait_background "Kafka broker" show || tools_status=$?
phase_done "Kafka broker (waiting)"

section "Kafka tests"
if ((build_status != 0)); then
  info "skipped: the build failed"
elif ((have_nextest)); then
  info "cargo nextest run --workspace -E '$KAFKA_TESTS'"
  cargo nextest run --workspace --no-fail-fast -E "$KAFKA_TESTS" || record_test_status $?
else
  info "no cargo-nextest: cargo test --workspace (every test, here)"
  cargo test --workspace --no-fail-fast || record_test_status $?
fi
phase_done "Kafka tests"

# Deployment manifests (issue 20): both kustomize overlays render and pass kubernetes-validate, every
# container's settings pass the binaries' --check-config, and the compose file passes its schema. Needs kubectl
# (not among Debian's packages); without it the step is reported as skipped, not failed.
section "Deployment manifests (scripts/validate-deploy.sh)"
deploy_status=0
if ((build_status != 0)); then
  info "skipped: the build failed"
elif ! command -v kubectl >/dev/null; then
  info "skipped: kubectl is not installed (it renders the kustomize overlays)"
else
  bash scripts/validate-deploy.sh || deploy_status=$?
  # The manifests and the compose file replayed in containers of the image (tests/tests/deploy_replay.rs), when
  # scripts/image.sh has built it from this very commit: building it takes ~40 minutes cold, more than this
  # suite's budget, and an image of another commit would test other binaries.
  image="${SLUICE_IMAGE:-localhost/sluice:dev}"
  revision=$(podman image inspect --format '{{index .Labels "org.opencontainers.image.revision"}}' "$image" 2>/dev/null || true)
  if ((test_status == 0)) && [[ -n "$revision" && "$revision" == "$(git rev-parse HEAD 2>/dev/null)" ]]; then
    info "replaying the EKS and GKE overlays and the compose file in containers of $image"
    cargo nextest run --workspace --run-ignored only -E 'binary(deploy_replay)' || deploy_status=$?
  else
    info "skipped the container replay: no image $image of this commit here (scripts/image.sh builds it; then run"
    info "  cargo nextest run --run-ignored only -E 'binary(deploy_replay)'), or the tests failed"
  fi
fi
phase_done "deployment manifests"

# Monitoring (issue 22): deploy/monitoring against a real Prometheus (Debian's package, installed when missing)
# scraping a local cluster and Kafka broker that run jobs: promtool on the rules and configurations, the Kubernetes
# configuration's relabelling on the manifests' pods, and every dashboard and alert expression returning data
# (about 15 s warm; two minutes when an expression lacks data; needs nisshi, installed above).
section "Monitoring (scripts/monitoring-check.sh)"
monitoring_status=0
if ((build_status != 0)); then
  info "skipped: the build failed"
  monitoring_status=$build_status
else
  bash scripts/monitoring-check.sh || monitoring_status=$?
fi
phase_done "monitoring"

# The web UI in a real browser (issue 22): Debian's Chromium driven by playwright-core (npm, pinned; installed once
# into tests/browser/node_modules with its cache under ~/.cache/sluice/npm) against a local cluster: log in, submit,
# graph, back-pressure and bottleneck, savepoint, a killed TaskManager in the timeline (about 20 s warm; its budget
# is 170 s).
section "Web UI in Chromium (scripts/browser-check.sh)"
browser_status=0
if ((build_status != 0)); then
  info "skipped: the build failed"
  browser_status=$build_status
else
  bash scripts/browser-check.sh || browser_status=$?
fi
phase_done "browser"

# Fuzzing (issue 19): every fuzz target for a bounded time (scripts/fuzz.sh, its own target directory
# ~/.cache/sluice/target-fuzz, built in the background since the start: cold 17 minutes alone on 2 cores,
# warm seconds to 3 minutes; then 15 s of fuzzing a target). A crash fails the run and prints the input and how to
# replay it. When the background build failed, scripts/fuzz.sh builds again in the foreground and shows why.
section "Fuzz (scripts/fuzz.sh)"
fuzz_status=0
wait_background "fuzz build" || info "the background fuzz build failed (its log is above)"
phase_done "fuzz build (waiting)"
if ((build_status != 0)); then
  info "skipped: the build failed"
  fuzz_status=$build_status
else
  FUZZ_SECONDS_PER_TARGET="${FUZZ_SECONDS_PER_TARGET:-15}" bash scripts/fuzz.sh || fuzz_status=$?
fi
phase_done "fuzz"

section "Summary"
summarize() {
  if (($2 == 0)); then ok "$1: passed"; else printf '%s    %s: FAILED (exit %s)%s\n' "$_red" "$1" "$2" "$_reset"; fi
}
summarize "format" "$fmt_status"
summarize "build" "$build_status"
summarize "clippy" "$clippy_status"
summarize "test tools" "$tools_status"
summarize "tests" "$test_status"
summarize "deployment manifests" "$deploy_status"
summarize "monitoring" "$monitoring_status"
summarize "browser" "$browser_status"
summarize "fuzz" "$fuzz_status"
info "phase durations (seconds; CPU: what the whole machine used meanwhile, out of seconds x $CORES cores):"
total_cpu=0
for i in "${!PHASE_NAMES[@]}"; do
  info "  ${PHASE_NAMES[$i]}: ${PHASE_SECONDS[$i]} (CPU ${PHASE_CPU[$i]} of $((PHASE_SECONDS[i] * CORES)))"
  total_cpu=$((total_cpu + PHASE_CPU[i]))
done
info "  total: $SECONDS (CPU $total_cpu of $((SECONDS * CORES)))"
info "background builds (how long each took from the end of the toolchain step, overlapping the phases above,"
info "and its own CPU time):"
for i in "${!BACKGROUND_NAMES[@]}"; do
  info "  ${BACKGROUND_NAMES[$i]}: ${BACKGROUND_SECONDS[$i]}"
done

if ((test_status != 0)); then
  exit "$test_status"
elif ((fmt_status != 0 || clippy_status != 0 || tools_status != 0 || fuzz_status != 0 \
  || deploy_status != 0 || monitoring_status != 0 || browser_status != 0)); then
  exit 1
fi
exit 0
