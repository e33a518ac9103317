#!/usr/bin/env bash
# Builds the Sluice image (deploy/docker/Dockerfile) with podman and prints its size.
#
#   - with public bases (the default where images can be pulled): podman build, nothing else;
#   - with LOCAL_BASES=1 (this machine, which cannot pull): makes the two bases first, once —
#       localhost/sluice-runtime-base: a minimal Debian (debootstrap --variant=minbase) with the runtime libraries,
#       localhost/sluice-builder-base: the same Debian with the build dependencies and this machine's Rust
#       toolchain copied in —
#     and builds against them with the cargo registry of this machine mounted, offline.
# Podman runs as root here with runc, cgroupfs and host networking (see issue 20, "How to test it here").
#
# Usage: scripts/image.sh [TAG]      (default sluice:<version from Cargo.toml>)
#   LOCAL_BASES=1         make and use local bases instead of pulling docker.io/library/{rust,debian}
#   DEBIAN_SUITE=bookworm the Debian release of the local bases
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
[[ -n "${version}" ]] || fail "no version in Cargo.toml"
tag="${1:-sluice:${version}}"
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
# An image of a tree with changes is not an image of that commit (scripts/test.sh replays only an image of HEAD).
if [[ -n "$(git status --porcelain 2>/dev/null)" ]]; then revision="${revision}-dirty"; fi
created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
readonly DEBIAN_SUITE="${DEBIAN_SUITE:-bookworm}"
readonly PODMAN=(podman --runtime runc --cgroup-manager cgroupfs)
if ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
  info "installing podman and runc (apt-get)"
  apt-get update -q >/dev/null || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman runc >/dev/null || fail "cannot install podman and runc"
fi
# Containers may not set resource limits on these machines (setrlimit is refused): no default ulimits. The test
# that replays the manifests (tests/tests/deploy_replay.rs) uses the same file.
mkdir -p "$HOME/.cache/sluice"
export CONTAINERS_CONF="$HOME/.cache/sluice/containers.conf"
printf '[containers]\ndefault_ulimits = []\n' >"$CONTAINERS_CONF"

build_args=(--build-arg "SLUICE_VERSION=${version}" --build-arg "SLUICE_REVISION=${revision}"
  --build-arg "SLUICE_CREATED=${created}")
volumes=()

# make_base NAME PACKAGES: a minimal Debian with PACKAGES, imported as localhost/NAME (skipped when it exists).
make_base() {
  local name=$1 packages=$2 root
  if "${PODMAN[@]}" image exists "localhost/${name}"; then
    info "localhost/${name} exists"
    return
  fi
  command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null ||
    fail "debootstrap is missing and cannot be installed (apt-get install debootstrap)"
  root=$(mktemp -d)
  info "debootstrap ${DEBIAN_SUITE} into ${root} with ${packages}"
  debootstrap --variant=minbase --include="${packages}" "${DEBIAN_SUITE}" "${root}" >/dev/null
  # What a runtime needs none of: the downloaded packages, package lists, documentation, manuals and translations.
  rm -rf "${root}"/var/cache/apt/archives/*.deb "${root}"/var/lib/apt/lists/* "${root}"/usr/share/doc/* \
    "${root}"/usr/share/man/* "${root}"/usr/share/locale/* "${root}"/usr/share/info/*
  if [[ "${name}" == sluice-builder-base ]]; then
    # This machine's Rust toolchain, as the rust image lays it out (/usr/local/cargo, /usr/local/rustup).
    mkdir -p "${root}/usr/local/cargo" "${root}/usr/local/rustup"
    cp -a "${CARGO_HOME:-$HOME/.cargo}/bin" "${root}/usr/local/cargo/"
    cp -a "${RUSTUP_HOME:-$HOME/.rustup}/." "${root}/usr/local/rustup/"
  fi
  tar -C "${root}" -c . | "${PODMAN[@]}" import \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' --change 'ENV RUSTUP_HOME=/usr/local/rustup' \
    - "localhost/${name}" >/dev/null
  rm -rf "${root}"
  ok "made localhost/${name}"
}

if [[ "${LOCAL_BASES:-0}" == 1 ]]; then
  section "local base images"
  make_base sluice-runtime-base "ca-certificates,libssl3,zlib1g,libstdc++6,passwd"
  make_base sluice-builder-base "build-essential,clang,libclang-dev,pkg-config,libssl-dev,perl,ca-certificates,passwd"
  build_args+=(--build-arg BUILDER_IMAGE=localhost/sluice-builder-base
    --build-arg RUNTIME_IMAGE=localhost/sluice-runtime-base
    --build-arg INSTALL_BUILD_DEPS=0 --build-arg INSTALL_RUNTIME_DEPS=0 --build-arg CARGO_FLAGS=--offline)
  # Crates from this machine's registry: the build cannot reach crates.io.
  volumes+=(--volume "${CARGO_HOME:-$HOME/.cargo}/registry:/host-cargo-registry:ro")
fi

section "podman build ${tag}"
start=$(date +%s)
"${PODMAN[@]}" build --network host --file deploy/docker/Dockerfile "${build_args[@]}" "${volumes[@]}" \
  --tag "${tag}" .
ok "built ${tag} in $(($(date +%s) - start)) s"

section "image"
size_bytes=$("${PODMAN[@]}" image inspect --format '{{.Size}}' "${tag}")
info "size: $((size_bytes / 1024 / 1024)) MiB (${size_bytes} bytes)"
info "version: $("${PODMAN[@]}" run --rm --network host "${tag}" sluice-jobmanager --version)"
