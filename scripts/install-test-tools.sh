#!/usr/bin/env bash
# The programs the test suite runs besides Sluice's own, each built once from crates.io (pinned versions):
#   cargo-nextest  the test runner (into ~/.cargo/bin, where cargo finds its subcommands);
#   s3s-fs         the S3 server of the object-storage tests (a directory served over the S3 API);
#   nisshi         the Kafka broker of the Kafka tests and the monitoring check (in-memory storage).
# The two servers go into ~/.cache/sluice/tools/bin, where the tests look for them (tests/src/s3.rs,
# tests/src/kafka.rs). A tool already there at its version is left alone, so a warm run takes a second.
#
# Usage: scripts/install-test-tools.sh [TOOL...]   (default: all three, in the order above)
#
# scripts/test.sh runs it in the background while the workspace builds, at a lower CPU priority: nextest
# and s3s-fs in one run, nisshi in another, so the tests that need no Kafka broker start without it. Exits 1
# when a tool could not be installed, after naming it; the tests that need it then fail with a message that
# says where they looked.
#
# Every tool is built at opt-level 1: a test runner waits for tests, and a test server moves a few thousand
# records; opt-level 3 costs CPU a cold run on 2 cores does not have.
set -uo pipefail

cd "$(dirname "$0")/.."
source scripts/lib.sh

readonly TOOLS_ROOT="$HOME/.cache/sluice/tools"
readonly NEXTEST_VERSION="0.9.143"
readonly S3S_FS_VERSION="0.14.1"
readonly NISSHI_VERSION="0.8.1"

# They are built by plain rustc (not ours to lint), at opt-level 1.
unset RUSTC_WORKSPACE_WRAPPER
export CARGO_PROFILE_RELEASE_OPT_LEVEL=1

tools=("$@")
((${#tools[@]} > 0)) || tools=(cargo-nextest s3s-fs nisshi)

# A build directory of this run's own (another run may be building other tools at the same time), shared by
# its tools (their dependencies overlap: tokio, hyper, ...) and removed at the end: it takes gigabytes.
mkdir -p "$HOME/.cache/sluice"
build_dir="$(mktemp -d "$HOME/.cache/sluice/tools-target.XXXXXX")"
trap 'rm -rf "$build_dir"' EXIT

# install_tool CRATE VERSION [cargo install flags...]: CRATE@VERSION into $TOOLS_ROOT, unless it is there.
install_tool() {
  local name="$1" version="$2"
  shift 2
  if [[ -x "$TOOLS_ROOT/bin/$name" ]] && grep -q "$name $version" "$TOOLS_ROOT/.crates.toml" 2>/dev/null; then
    info "$name $version present ($TOOLS_ROOT/bin/$name)"
    return 0
  fi
  info "installing $name $version into $TOOLS_ROOT (once; minutes)"
  cargo install "$name@$version" --locked "$@" --root "$TOOLS_ROOT" --target-dir "$build_dir"
}

failed=()
for tool in "${tools[@]}"; do
  case "$tool" in
    cargo-nextest)
      # Without its self-update feature (an HTTP client and archive formats nobody here uses).
      section "cargo-nextest"
      if cargo nextest --version >/dev/null 2>&1; then
        info "present ($(cargo nextest --version 2>/dev/null | head -n 1))"
      else
        info "installing cargo-nextest $NEXTEST_VERSION (cargo install --locked)"
        cargo install "cargo-nextest@$NEXTEST_VERSION" --locked --no-default-features --features default-no-update \
          --target-dir "$build_dir" || failed+=(cargo-nextest)
      fi
      ;;
    s3s-fs)
      section "S3 server (s3s-fs)"
      install_tool s3s-fs "$S3S_FS_VERSION" --features binary || failed+=(s3s-fs)
      ;;
    nisshi)
      section "Kafka broker (nisshi)"
      install_tool nisshi "$NISSHI_VERSION" --ignore-rust-version --no-default-features --features dynostore \
        || failed+=(nisshi)
      ;;
    *)
      printf 'error: unknown tool %s (cargo-nextest, s3s-fs, nisshi)\n' "$tool" >&2
      exit 2
      ;;
  esac
done

if ((${#failed[@]} > 0)); then
  printf 'error: could not install: %s\n' "${failed[*]}" >&2
  exit 1
fi
ok "installed: ${tools[*]}"
