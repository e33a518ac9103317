#!/usr/bin/env bash
# The whole test suite, as CI runs it (`.ci/run` executes this file), on a fresh Debian machine or a
# developer's checkout:
#   1. system packages the build needs, installed with apt only when missing (needs root);
#   2. the Rust toolchain (rustup, minimal profile, stable) with rustfmt and clippy, only when missing;
#   3. cargo fmt --check; 4. cargo build --workspace --all-targets (the integration tests start the binaries),
#   linted as it builds: clippy-driver compiles the workspace's own crates (see "Lint while building");
#   5. the S3 server the object-storage tests start (s3s-fs) and the Kafka broker of the Kafka tests (nisshi),
#   each installed once into ~/.cache/sluice/tools, a throwaway PostgreSQL server (the metadata-store tests
#   use it), then cargo nextest run --workspace (cargo test when nextest is missing);
#   6. the deployment manifests, the monitoring configuration against a real Prometheus, the web UI in a real
#   Chromium, and a bounded fuzzing run.
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

# The nextest binary, installed when missing; falls back to cargo test when that fails too.
have_nextest() {
  cargo nextest --version >/dev/null 2>&1 && return 0
  info "cargo-nextest not found: installing it (cargo install cargo-nextest --locked)"
  RUSTC_WORKSPACE_WRAPPER= cargo install cargo-nextest --locked >/dev/null 2>&1 && return 0
  info "cannot install cargo-nextest; falling back to cargo test"
  return 1
}

# Phase durations, printed in the summary: names and seconds, in order.
PHASE_NAMES=()
PHASE_SECONDS=()
phase_started=$SECONDS
# phase_done NAME: records how long the phase that just ended took (since the previous phase ended).
phase_done() {
  PHASE_NAMES+=("$1")
  PHASE_SECONDS+=($((SECONDS - phase_started)))
  phase_started=$SECONDS
}

section "System packages"
install_system_packages
phase_done "system packages"

section "Rust toolchain"
install_rust
info "CARGO_TARGET_DIR=$CARGO_TARGET_DIR"
phase_done "Rust toolchain"

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

# install_tool CRATE VERSION [cargo install flags...]: the test server CRATE@VERSION, built once into a cache
# outside the clone (~/.cache/sluice/tools). The tools share one build directory (their dependencies
# overlap: tokio, hyper, ...), removed once every tool is installed: it takes gigabytes. They are built by
# plain rustc (no workspace wrapper: they are not ours to lint).
tools_build="$HOME/.cache/sluice/tools-target"
install_tool() {
  local name="$1" version="$2"
  shift 2
  local root="$HOME/.cache/sluice/tools"
  if [[ -x "$root/bin/$name" ]] && grep -q "$name $version" "$root/.crates.toml" 2>/dev/null; then
    info "$name $version present ($root/bin/$name)"
    return 0
  fi
  info "installing $name $version into $root (once; minutes)"
  RUSTC_WORKSPACE_WRAPPER='' cargo install "$name@$version" --locked "$@" --root "$root" --target-dir "$tools_build"
}

# The S3 server of the object-storage tests: s3s-fs from crates.io (a directory served over the S3 API); the
# tests find it in the cache (tests/src/s3.rs).
section "S3 server (s3s-fs)"
s3_status=0
install_tool s3s-fs 0.14.1 --features binary || s3_status=$?
phase_done "s3s-fs"

# The Kafka broker of the Kafka tests: nisshi from crates.io (a Kafka-protocol broker, in-memory storage;
# about 11 minutes to build the first time); the tests find it in the cache (tests/src/kafka.rs).
section "Kafka broker (nisshi)"
kafka_status=0
install_tool nisshi 0.8.1 --ignore-rust-version --no-default-features --features dynostore || kafka_status=$?
rm -rf "$tools_build"
phase_done "nisshi"

section "Tests"
test_status=0
trap stop_postgres EXIT
((build_status != 0)) || start_postgres
if ((build_status != 0)); then
  info "skipped: the build failed"
  test_status=$build_status
elif have_nextest; then
  info "cargo nextest run --workspace"
  cargo nextest run --workspace --no-fail-fast || test_status=$?
else
  info "cargo test --workspace"
  cargo test --workspace --no-fail-fast || test_status=$?
fi

phase_done "tests"

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
# ~/.cache/sluice/target-fuzz; cold about 50 CPU-minutes, so 25 minutes on 2 cores; warm seconds to 3 minutes, plus
# 15 s of fuzzing a target). A crash fails the run and prints the input and how to replay it.
section "Fuzz (scripts/fuzz.sh)"
fuzz_status=0
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
summarize "s3s-fs" "$s3_status"
summarize "nisshi" "$kafka_status"
summarize "tests" "$test_status"
summarize "deployment manifests" "$deploy_status"
summarize "monitoring" "$monitoring_status"
summarize "browser" "$browser_status"
summarize "fuzz" "$fuzz_status"
info "phase durations (seconds):"
for i in "${!PHASE_NAMES[@]}"; do
  info "  ${PHASE_NAMES[$i]}: ${PHASE_SECONDS[$i]}"
done
info "  total: $SECONDS"

if ((test_status != 0)); then
  exit "$test_status"
elif ((fmt_status != 0 || clippy_status != 0 || s3_status != 0 || kafka_status != 0 || fuzz_status != 0 \
  || deploy_status != 0 || monitoring_status != 0 || browser_status != 0)); then
  exit 1
fi
exit 0
