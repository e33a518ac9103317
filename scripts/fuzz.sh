#!/usr/bin/env bash
# Fuzzing (issue 19): builds the cargo-fuzz targets of fuzz/ and runs each for a bounded time. Exits 1 when a
# target crashed (a panic, a stack overflow, an input slower than FUZZ_TIMEOUT_S, or memory over
# FUZZ_RSS_LIMIT_MB), after printing the input that did it and the command that replays it; 2 when the tools
# or the build failed.
#
#   FUZZ_SECONDS_PER_TARGET  seconds of fuzzing per target (default 15: the six targets take 45 s two at a time)
#   FUZZ_JOBS                targets fuzzed at once, each on a core of its own (default: the machine's cores)
#   FUZZ_TARGETS             targets to run, space-separated (default: every target in fuzz/Cargo.toml)
#   FUZZ_TARGET_DIR          cargo target directory of the fuzz build (default ~/.cache/sluice/target-fuzz)
#   FUZZ_CORPUS_DIR          where the corpus each run grows is kept between runs (default
#                            ~/.cache/sluice/fuzz-corpus/<target>); the committed seeds (fuzz/corpus/<target>)
#                            are read, never written
#
# `scripts/fuzz.sh --build-only` installs cargo-fuzz and builds the targets, and stops there (scripts/test.sh
# builds them in the background while the workspace builds and the tests run).
#
# What the targets are and what a crash means: docs/failures.md, "Fuzzing". The toolchain is stable: cargo fuzz
# needs `-Z` flags, allowed by RUSTC_BOOTSTRAP=1. The build has no sanitizer (the code it fuzzes forbids
# `unsafe`; a panic is what we look for) and keeps debug assertions and overflow checks on. It writes inside
# the clone only fuzz/artifacts/ (crashing inputs; ignored by git).
set -uo pipefail

cd "$(dirname "$0")/.."
source scripts/lib.sh

readonly CARGO_FUZZ_VERSION="0.13.2"
readonly FUZZ_SECONDS_PER_TARGET="${FUZZ_SECONDS_PER_TARGET:-15}"
# An input that takes longer than this is a crash (a hang, or work out of proportion to its few KiB).
readonly FUZZ_TIMEOUT_S="${FUZZ_TIMEOUT_S:-10}"
# Memory a target may use (libFuzzer's -rss_limit_mb; a single allocation over it is a crash too).
readonly FUZZ_RSS_LIMIT_MB="${FUZZ_RSS_LIMIT_MB:-2048}"
# The largest input libFuzzer makes: a few KiB reach every branch of a header and keep runs fast; the job
# file seeds (about 2 KiB each) fit with room to grow.
readonly FUZZ_MAX_LEN_BYTES="${FUZZ_MAX_LEN_BYTES:-8192}"
readonly FUZZ_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/sluice/target-fuzz}"
readonly FUZZ_CORPUS_DIR="${FUZZ_CORPUS_DIR:-$HOME/.cache/sluice/fuzz-corpus}"
readonly TOOLS_ROOT="$HOME/.cache/sluice/tools"
build_only=0
case "${1:-}" in
  --build-only) build_only=1 ;;
  "") ;;
  *) printf 'usage: scripts/fuzz.sh [--build-only]\n' >&2; exit 2 ;;
esac
readonly TRIPLE="x86_64-unknown-linux-gnu"
# The build flags; the same for every build, so a warm target directory is reused.
readonly BUILD_FLAGS=(--sanitizer none --debug-assertions --codegen-units 16 --target "$TRIPLE"
  --target-dir "$FUZZ_TARGET_DIR")

export PATH="$TOOLS_ROOT/bin:$PATH"
export RUSTC_BOOTSTRAP=1
# The fuzz crate is not linted by clippy-driver (scripts/test.sh exports it for the workspace).
unset RUSTC_WORKSPACE_WRAPPER
export CARGO_TARGET_DIR="$FUZZ_TARGET_DIR"

section "cargo-fuzz $CARGO_FUZZ_VERSION"
if cargo fuzz --version 2>/dev/null | grep -q "cargo-fuzz $CARGO_FUZZ_VERSION"; then
  info "present ($(command -v cargo-fuzz))"
else
  info "installing cargo-fuzz $CARGO_FUZZ_VERSION into $TOOLS_ROOT (once; about a minute)"
  tools_build="$(mktemp -d)"
  # At opt-level 1, as the other test tools (scripts/install-test-tools.sh): it only drives the builds and runs.
  if ! CARGO_PROFILE_RELEASE_OPT_LEVEL=1 cargo install "cargo-fuzz@$CARGO_FUZZ_VERSION" --locked --root "$TOOLS_ROOT" \
    --target-dir "$tools_build"; then
    rm -rf "$tools_build"
    printf 'error: cannot install cargo-fuzz\n' >&2
    exit 2
  fi
  rm -rf "$tools_build"
fi

targets=()
if [[ -n "${FUZZ_TARGETS:-}" ]]; then
  read -r -a targets <<<"$FUZZ_TARGETS"
else
  mapfile -t targets < <(cd fuzz && cargo fuzz list)
fi
((${#targets[@]} > 0)) || { printf 'error: no fuzz targets found\n' >&2; exit 2; }

section "Build (${targets[*]})"
build_started=$SECONDS
# A cold cache compiles DataFusion and the rest with coverage instrumentation (minutes; not RocksDB or
# librdkafka, which no target needs: fuzz/Cargo.toml); a warm one only relinks what changed.
if ! (cd fuzz && cargo fuzz build "${BUILD_FLAGS[@]}"); then
  printf 'error: the fuzz targets do not build\n' >&2
  exit 2
fi
info "built in $((SECONDS - build_started)) s"
((build_only == 0)) || exit 0

# The targets run side by side, one per core (FUZZ_JOBS, default: the machine's cores): each still has a core to
# itself for its whole time, and the step takes half as long on two cores.
readonly FUZZ_JOBS="${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 1)}"
section "Fuzz (${FUZZ_SECONDS_PER_TARGET} s per target, $FUZZ_JOBS at a time)"
logs="$(mktemp -d)"
# fuzz_target TARGET: fuzzes TARGET; its output goes to $logs/TARGET.log, its exit status to $logs/TARGET.status.
fuzz_target() {
  local target="$1"
  local binary="$FUZZ_TARGET_DIR/$TRIPLE/release/$target" corpus="$FUZZ_CORPUS_DIR/$target"
  local artifacts="fuzz/artifacts/$target"
  mkdir -p "$corpus" "$artifacts"
  # The first corpus directory gets the new inputs; the committed seeds are only read.
  "$binary" "$corpus" "fuzz/corpus/$target" \
    -max_total_time="$FUZZ_SECONDS_PER_TARGET" -timeout="$FUZZ_TIMEOUT_S" -rss_limit_mb="$FUZZ_RSS_LIMIT_MB" \
    -max_len="$FUZZ_MAX_LEN_BYTES" -artifact_prefix="$artifacts/" -print_final_stats=1 >"$logs/$target.log" 2>&1
  echo "$?" >"$logs/$target.status"
}
running=0
for target in "${targets[@]}"; do
  if ((running >= FUZZ_JOBS)); then
    wait -n
    running=$((running - 1))
  fi
  fuzz_target "$target" &
  running=$((running + 1))
done
wait
crashed=()
for target in "${targets[@]}"; do
  binary="$FUZZ_TARGET_DIR/$TRIPLE/release/$target"
  log="$logs/$target.log"
  status="$(cat "$logs/$target.status" 2>/dev/null || echo 'none')"
  runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)"
  coverage="$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 || true)"
  if [[ "$status" == 0 ]]; then
    ok "$target: ${runs:-?} inputs, ${coverage:-cov: ?}, no crash"
  else
    crashed+=("$target")
    printf '%s    %s: CRASHED (exit %s)%s\n' "$_red" "$target" "$status" "$_reset"
    tail -n 40 "$log"
    input="$(grep -o 'Test unit written to .*' "$log" | sed 's/Test unit written to //' | tail -n 1)"
    info "input: ${input:-see the log above}"
    info "replay: $binary ${input:-<input>}"
  fi
done
rm -rf "$logs"

section "Summary"
if ((${#crashed[@]} == 0)); then
  ok "fuzz: ${#targets[@]} targets x ${FUZZ_SECONDS_PER_TARGET} s, no crash"
  exit 0
fi
printf '%s    fuzz: %s of %s targets crashed: %s (inputs in fuzz/artifacts/)%s\n' \
  "$_red" "${#crashed[@]}" "${#targets[@]}" "${crashed[*]}" "$_reset"
exit 1
