#!/usr/bin/env bash
# Quickstart: installs what is missing (Debian packages, Rust), builds Sluice, starts a local cluster
# (1 JobManager, 2 TaskManagers) under ./data/quickstart, runs the word-count example over
# examples/data/sample.txt, prints the 20 most frequent words, and stops the cluster again (also on failure
# or Ctrl-C).
#
# Usage: scripts/quickstart.sh
# Environment: CARGO_TARGET_DIR (default ~/.cache/sluice/target), QUICKSTART_TIMEOUT_S (default 300).
set -euo pipefail

cd "$(dirname "$0")/.."
source scripts/lib.sh

# How long the job may run before the quickstart gives up, in seconds.
readonly JOB_TIMEOUT_S="${QUICKSTART_TIMEOUT_S:-300}"
# How long the TaskManagers may take to register, in seconds.
readonly REGISTER_TIMEOUT_S=60
readonly DIR=data/quickstart
readonly JOB_FILE=examples/jobs/word_count.json
# Where word_count.json's file sink writes, relative to the TaskManagers' working directory (this one).
readonly OUTPUT_DIR=data/output/word_count

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}"
readonly BIN="$CARGO_TARGET_DIR/debug"
readonly SLUICE="$BIN/sluice"

trap stop_cluster EXIT

section "System packages and Rust (installed only when missing)"
install_system_packages
install_rust
use_fast_debug_cxx

section "Building (cargo build --bins; the first build takes several minutes)"
cargo build --bins

section "Starting a local cluster under $DIR"
rm -rf "$DIR" "$OUTPUT_DIR"
mkdir -p "$DIR"
start_jobmanager "$BIN" "$DIR"
info "JobManager: REST http://$JM_REST (web UI), RPC $JM_RPC; log $DIR/jobmanager.log"
for id in tm-1 tm-2; do
  start_taskmanager "$BIN" "$DIR" "$id" 2
  info "TaskManager $id: 2 slots; log $DIR/$id.log"
done
wait_for_taskmanagers "$SLUICE" 2 "$REGISTER_TIMEOUT_S"
"$SLUICE" taskmanagers

section "Submitting $JOB_FILE"
job_id="$("$SLUICE" submit --quiet "$JOB_FILE")" || { show_all_logs; fail "the submission failed"; }
info "job $job_id; waiting for it to finish (at most ${JOB_TIMEOUT_S}s)"
if ! "$SLUICE" wait "$job_id" --timeout "$JOB_TIMEOUT_S"; then
  "$SLUICE" status "$job_id" >&2 || true
  show_all_logs
  fail "job $job_id did not finish; its status and the cluster's logs are above"
fi
"$SLUICE" status "$job_id"

section "Top 20 words (final count per word from $OUTPUT_DIR/part-*.jsonl)"
shopt -s nullglob
parts=("$OUTPUT_DIR"/part-*.jsonl)
((${#parts[@]} > 0)) || fail "the job finished but wrote no part files to $OUTPUT_DIR"
# The aggregate emits an update per key per batch, and a key lives in one part file in order, so the
# last line of a word holds its final count.
awk '
  match($0, /"word": *"[^"]*"/) {
    word = substr($0, RSTART, RLENGTH); sub(/^"word": *"/, "", word); sub(/"$/, "", word)
    if (match($0, /"count": *"?[0-9]+/)) {
      count = substr($0, RSTART, RLENGTH); gsub(/[^0-9]/, "", count); last[word] = count
    }
  }
  END { for (word in last) printf "%d %s\n", last[word], word }
' "${parts[@]}" | sort -k1,1nr -k2,2 | awk 'NR <= 20 { printf "    %-12s %6d\n", $2, $1 }'
# (awk reads to the end rather than `head` closing the pipe: under pipefail, sort's SIGPIPE would fail the script.)

section "Done"
ok "word count FINISHED; the cluster stops now (run it by hand: see README.md)"
