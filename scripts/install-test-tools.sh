#!/usr/bin/env bash
# The programs the test suite runs besides Sluice's own, each built once from crates.io (pinned versions):
#   cargo-nextest  the test runner (into ~/.cargo/bin, where cargo finds its subcommands);
#   s3s-fs         the S3 server of the object-storage tests (a directory served over the S3 API);
#   nisshi         the Kafka broker of the Kafka tests and the monitoring check (in-memory storage).
# The two servers go into ~/.cache/sluice/tools/bin, where the tests look for them (tests/src/s3.rs,
# tests/src/kafka.rs). A tool already there at its version is left alone, so a warm run takes a second.
#
# scripts/test.sh runs this in the background while the workspace builds, at a lower CPU priority. Exits 1
# when a tool could not be installed, after naming it; the tests that need it then fail with a message that
# says where they looked.
set -uo pipefail

cd "$(dirname "$0")/.."
source scripts/lib.sh

readonly TOOLS_ROOT="$HOME/.cache/sluice/tools"
# The tools share one build directory (their dependencies overlap: tokio, hyper, ...), removed once every
# tool is installed: it takes gigabytes.
readonly TOOLS_BUILD="$HOME/.cache/sluice/tools-target"
readonly NEXTEST_VERSION="0.9.143"

# They are built by plain rustc: not ours to lint.
unset RUSTC_WORKSPACE_WRAPPER

# install_tool CRATE VERSION [cargo install flags...]: CRATE@VERSION into $TOOLS_ROOT, unless it is there.
install_tool() {
  local name="$1" version="$2"
  shift 2
  if [[ -x "$TOOLS_ROOT/bin/$name" ]] && grep -q "$name $version" "$TOOLS_ROOT/.crates.toml" 2>/dev/null; then
    info "$name $version present ($TOOLS_ROOT/bin/$name)"
    return 0
  fi
  info "installing $name $version into $TOOLS_ROOT (once; minutes)"
  cargo install "$name@$version" --locked "$@" --root "$TOOLS_ROOT" --target-dir "$TOOLS_BUILD"
}

failed=()

section "cargo-nextest"
if cargo nextest --version >/dev/null 2>&1; then
  info "present ($(cargo nextest --version 2>/dev/null | head -n 1))"
else
  info "installing cargo-nextest $NEXTEST_VERSION (cargo install --locked)"
  cargo install "cargo-nextest@$NEXTEST_VERSION" --locked --target-dir "$TOOLS_BUILD" || failed+=(cargo-nextest)
fi

section "S3 server (s3s-fs)"
install_tool s3s-fs 0.14.1 --features binary || failed+=(s3s-fs)

# Built at opt-level 1: a test moves a few thousand records through it, and opt-level 3 took 11.5 minutes
# of a cold run on 2 cores against about half that.
section "Kafka broker (nisshi)"
CARGO_PROFILE_RELEASE_OPT_LEVEL=1 \
  install_tool nisshi 0.8.1 --ignore-rust-version --no-default-features --features dynostore || failed+=(nisshi)

rm -rf "$TOOLS_BUILD"
if ((${#failed[@]} > 0)); then
  printf 'error: could not install: %s\n' "${failed[*]}" >&2
  exit 1
fi
ok "test tools installed"
