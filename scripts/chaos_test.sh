#!/usr/bin/env bash
# Chaos test: a local cluster (1 JobManager, 3 TaskManagers × 4 slots) runs an exactly-once job (a
# deterministic, rate-limited generator with checkpoints → a keyed one-second window count and sum → the
# exactly-once file sink) while TaskManagers are killed with SIGKILL at random moments and started again a
# little later, and optionally the JobManager is killed and started again. At the end the committed output
# is compared with an uninterrupted run's, computed independently: records lost, duplicated, wrong values.
# Prints every kill with its recovery time (kill → job RUNNING with every task of the new attempt running),
# the share of time RUNNING, the records verified; exits 1 if anything was lost, duplicated or wrong.
#
# With --drain, TaskManagers get SIGTERM instead (what `kubectl drain` and a pod deletion send): each leaves
# gracefully, the JobManager checkpoints the job and moves it elsewhere, and the run prints each move's stall.
#
# With --jobmanagers K (K > 1), K JobManagers share a PostgreSQL database this script starts; --kill-jobmanager N
# then kills the *leader* N times: a standby takes over and adopts the running job, and the run prints each
# takeover's duration and the restarts it caused (0 when the job was adopted).
#
# Usage: scripts/chaos_test.sh [--duration S] [--kill-every MIN-MAX] [--kill-jobmanager N] [--jobmanagers K]
#                              [--seed N] [--restart-after S] [--rows-per-second R] [--drain]
#   defaults: --duration 120 --kill-every 10-20 --kill-jobmanager 0 --seed 1 --restart-after 2
#             --rows-per-second 2000
# Environment: CARGO_TARGET_DIR (default ~/.cache/sluice/target). Needs a built toolchain: run
# scripts/test.sh once on a fresh machine (it installs the system packages and Rust).
set -euo pipefail

cd "$(dirname "$0")/.."
source scripts/lib.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}"

section "Building (cargo build --bins; the first build takes several minutes)"
command -v cargo >/dev/null || fail "cargo is not installed; run scripts/test.sh once (it installs Rust) or see https://rustup.rs"
use_fast_debug_cxx
cargo build --bins

section "Chaos run"
if [[ " $* " =~ \ --jobmanagers[\ =]([0-9]+) ]] && (( BASH_REMATCH[1] > 1 )); then
  # Several JobManagers share a PostgreSQL database: start one for the run, stopped when it ends.
  start_postgres
  trap stop_postgres EXIT
  "$CARGO_TARGET_DIR/debug/sluice-chaos" "$@"
else
  exec "$CARGO_TARGET_DIR/debug/sluice-chaos" "$@"
fi
