# Shell helpers shared by the scripts in this folder: section headers, failing with context, and a small
# local cluster (one JobManager, N TaskManagers) whose processes are started in the background, found
# through the address files they write, and always stopped on exit.
#
# Source it from a script that runs under `set -euo pipefail` in the repository root:
#     source "$(dirname "$0")/lib.sh"
# Every wait here is bounded (a deadline in seconds); nothing sleeps in place of checking a condition.

# How long a process may take to write its address file after it starts, in seconds (a debug build of
# the JobManager opens SQLite and runs migrations first).
readonly SLUICE_START_TIMEOUT_S="${SLUICE_START_TIMEOUT_S:-60}"
# How long a stopped process gets to exit after SIGTERM before it is sent SIGKILL, in seconds.
readonly SLUICE_STOP_TIMEOUT_S=10
# Lines of a log shown when its process fails.
readonly SLUICE_LOG_TAIL_LINES=40

# PIDs, names and logs of the processes this script started (parallel arrays), stopped by stop_cluster.
SLUICE_PIDS=()
SLUICE_NAMES=()
SLUICE_LOGS=()

if [[ -t 1 ]]; then
  _bold=$'\e[1m' _red=$'\e[31m' _green=$'\e[32m' _reset=$'\e[0m'
else
  _bold='' _red='' _green='' _reset=''
fi

# section TITLE: a visible header between the phases of a script.
section() {
  printf '\n%s==> %s%s\n' "$_bold" "$*" "$_reset"
}

# info MESSAGE
info() {
  printf '    %s\n' "$*"
}

# ok MESSAGE
ok() {
  printf '%s    %s%s\n' "$_green" "$*" "$_reset"
}

# fail MESSAGE: prints the message in red on stderr and exits 1 (the EXIT trap then stops the cluster).
fail() {
  printf '%serror: %s%s\n' "$_red" "$*" "$_reset" >&2
  exit 1
}

# show_log NAME LOG: the tail of a process's log, on stderr.
show_log() {
  local name="$1" log="$2"
  printf '%s--- last %s lines of %s (%s) ---%s\n' "$_bold" "$SLUICE_LOG_TAIL_LINES" "$name" "$log" "$_reset" >&2
  tail -n "$SLUICE_LOG_TAIL_LINES" "$log" >&2 || true
  printf '%s--- end of %s ---%s\n' "$_bold" "$name" "$_reset" >&2
}

# show_all_logs: the tail of every started process's log, on stderr (for a failure whose culprit is unclear).
show_all_logs() {
  local i
  for i in "${!SLUICE_PIDS[@]}"; do
    show_log "${SLUICE_NAMES[$i]}" "${SLUICE_LOGS[$i]}"
  done
}

# start_process NAME LOG COMMAND...: runs COMMAND in the background with stdout and stderr in LOG, and
# remembers it for stop_cluster. Sets START_PID.
start_process() {
  local name="$1" log="$2"
  shift 2
  mkdir -p "$(dirname "$log")"
  # Logs are files: no colour codes (NO_COLOR), and anyhow errors without a backtrace
  # (RUST_LIB_BACKTRACE=0) so a log's tail shows the error itself; panics still follow RUST_BACKTRACE.
  NO_COLOR=1 RUST_LIB_BACKTRACE="${RUST_LIB_BACKTRACE:-0}" "$@" >"$log" 2>&1 &
  START_PID=$!
  SLUICE_PIDS+=("$START_PID")
  SLUICE_NAMES+=("$name")
  SLUICE_LOGS+=("$log")
}

# check_processes: fails, showing the log, if any started process has exited.
check_processes() {
  local i
  for i in "${!SLUICE_PIDS[@]}"; do
    if ! kill -0 "${SLUICE_PIDS[$i]}" 2>/dev/null; then
      show_log "${SLUICE_NAMES[$i]}" "${SLUICE_LOGS[$i]}"
      fail "${SLUICE_NAMES[$i]} (pid ${SLUICE_PIDS[$i]}) exited unexpectedly; its log is above"
    fi
  done
}

# wait_for_file PATH TIMEOUT_S WHAT: waits until PATH exists, checking that every started process lives.
wait_for_file() {
  local path="$1" timeout_s="$2" what="$3"
  local deadline=$((SECONDS + timeout_s))
  while [[ ! -s "$path" ]]; do
    check_processes
    if ((SECONDS >= deadline)); then
      show_all_logs
      fail "$what: $path did not appear within ${timeout_s}s"
    fi
    sleep 0.1
  done
}

# json_string KEY < JSON: the first string value of KEY (compact or pretty JSON; no jq needed).
json_string() {
  sed -n "s/.*\"$1\": *\"\([^\"]*\)\".*/\1/p" | head -n 1
}

# json_number KEY < JSON: the first numeric value of KEY.
json_number() {
  sed -n "s/.*\"$1\": *\([0-9][0-9.]*\).*/\1/p" | head -n 1
}

# start_jobmanager BIN_DIR DIR: starts a JobManager on free ports with its files in DIR/jobmanager.
# Sets JM_REST and JM_RPC (host:port) and exports SLUICE_JOBMANAGER and SLUICE_TOKEN_FILE (the admin token
# the JobManager generates in its data directory) for the `sluice` CLI and jm_curl.
start_jobmanager() {
  local bin_dir="$1" dir="$2"
  start_process jobmanager "$dir/jobmanager.log" "$bin_dir/sluice-jobmanager" \
    --rest-addr 127.0.0.1:0 --rpc-addr 127.0.0.1:0 --data-dir "$dir/jobmanager"
  wait_for_file "$dir/jobmanager/jobmanager.addr" "$SLUICE_START_TIMEOUT_S" "the JobManager did not start"
  local addr
  addr="$(cat "$dir/jobmanager/jobmanager.addr")"
  JM_REST="$(json_string rest <<<"$addr")"
  JM_RPC="$(json_string rpc <<<"$addr")"
  [[ -n "$JM_REST" && -n "$JM_RPC" ]] || fail "cannot read the addresses in $dir/jobmanager/jobmanager.addr: $addr"
  if [[ "${TLS:-off}" == on ]]; then
    # TLS (TLS=on with TLS_CERT_FILE, TLS_KEY_FILE, TLS_CA_FILE exported: every process inherits them).
    export SLUICE_JOBMANAGER="https://$JM_REST" SLUICE_CA_FILE="$TLS_CA_FILE"
  else
    export SLUICE_JOBMANAGER="http://$JM_REST"
  fi
  export SLUICE_TOKEN_FILE="$dir/jobmanager/admin.token"
  [[ -s "$SLUICE_TOKEN_FILE" ]] || fail "the JobManager wrote no admin token to $SLUICE_TOKEN_FILE"
}

# jm_curl PATH [CURL ARGS...]: curl on the JobManager's REST API (JM_REST) with its admin token.
jm_curl() {
  local path="$1"
  shift
  local tls=()
  [[ -n "${SLUICE_CA_FILE:-}" ]] && tls=(--cacert "$SLUICE_CA_FILE")
  # The header comes from a file (printf is a builtin), so the token never shows in curl's command line.
  curl -fsS "${tls[@]}" -H @<(printf 'Authorization: Bearer %s\n' "$(head -n 1 "$SLUICE_TOKEN_FILE")") "$@" \
    "$SLUICE_JOBMANAGER$path"
}

# start_taskmanager BIN_DIR DIR ID SLOTS: starts a TaskManager named ID with SLOTS slots on free ports,
# its files in DIR/ID, registering with the JobManager at JM_RPC with the cluster secret the JobManager
# generated in DIR/jobmanager/cluster.secret. Its working directory is the current
# one (relative paths in job files resolve against it).
start_taskmanager() {
  local bin_dir="$1" dir="$2" id="$3" slots="$4"
  start_process "$id" "$dir/$id.log" "$bin_dir/sluice-taskmanager" \
    --jobmanager "$JM_RPC" --rpc-addr 127.0.0.1:0 --data-addr 127.0.0.1:0 --metrics-addr 127.0.0.1:0 \
    --slots "$slots" --data-dir "$dir/$id" --id "$id" --cluster-secret-file "$dir/jobmanager/cluster.secret"
  wait_for_file "$dir/$id/taskmanager.addr" "$SLUICE_START_TIMEOUT_S" "TaskManager $id did not start"
}

# wait_for_taskmanagers SLUICE COUNT TIMEOUT_S: waits until COUNT TaskManagers are ACTIVE at the JobManager.
wait_for_taskmanagers() {
  local sluice="$1" count="$2" timeout_s="$3"
  local deadline=$((SECONDS + timeout_s)) active=0
  while :; do
    check_processes
    active="$("$sluice" cluster --json 2>/dev/null | json_number active_task_managers || true)"
    if [[ "${active:-0}" -ge "$count" ]]; then
      return 0
    fi
    if ((SECONDS >= deadline)); then
      show_all_logs
      fail "only ${active:-0} of $count TaskManagers registered within ${timeout_s}s"
    fi
    sleep 0.2
  done
}

# peak_rss_kib PID: the process's peak resident set size (VmHWM) in KiB, or "?" if it is gone.
peak_rss_kib() {
  awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo "?"
}

# rss_kib PID: the process's current resident set size (VmRSS) in KiB, or "?" if it is gone.
rss_kib() {
  awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo "?"
}

# stop_cluster: SIGTERM to every started process still running, then SIGKILL to any that outlive
# SLUICE_STOP_TIMEOUT_S. Installed as the EXIT trap by the scripts; safe to call twice.
stop_cluster() {
  local pid deadline
  ((${#SLUICE_PIDS[@]} > 0)) || return 0
  for pid in "${SLUICE_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  deadline=$((SECONDS + SLUICE_STOP_TIMEOUT_S))
  for pid in "${SLUICE_PIDS[@]}"; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  SLUICE_PIDS=()
  SLUICE_NAMES=()
  SLUICE_LOGS=()
}

# postgres_bin_dir: the bin directory of the newest installed PostgreSQL server, or nothing.
postgres_bin_dir() {
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  [[ -n "$dir" && -x "$dir/initdb" ]] && echo "$dir"
}

# free_port FIRST: the first port from FIRST (up to 200 further) nobody listens on at 127.0.0.1.
free_port() {
  local port
  for ((port = $1; port < $1 + 200; port++)); do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  return 1
}

# start_postgres: a throwaway PostgreSQL cluster on 127.0.0.1 (trust auth, fsync off) in a new temporary
# directory; exports SLUICE_TEST_POSTGRES_URL. Sets PG_DATA for stop_postgres. Runs the server as the
# postgres user when root (initdb refuses root).
readonly PG_PORT_ATTEMPTS_MAX=5
start_postgres() {
  local bin port as=()
  bin="$(postgres_bin_dir)" || fail "no PostgreSQL server under /usr/lib/postgresql (apt-get install postgresql)"
  port="$(free_port 55432)" || fail "no free port for PostgreSQL"
  PG_DATA="$(mktemp -d /tmp/sluice-pg.XXXXXX)"
  if [[ "$(id -u)" == 0 ]]; then
    chown postgres:postgres "$PG_DATA"
    as=(runuser -u postgres --)
  fi
  chmod 700 "$PG_DATA"
  "${as[@]}" "$bin/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 --no-sync >"$PG_DATA.initdb.log" 2>&1 \
    || { cat "$PG_DATA.initdb.log" >&2; fail "initdb failed"; }
  # A port free when probed can still be taken when the server binds it (this range is also the kernel's for
  # outgoing connections): then the next free one is tried, a bounded number of times.
  local attempt
  for ((attempt = 1; ; attempt++)); do
    "${as[@]}" "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_DATA/server.log" -w -t 30 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_DATA -c fsync=off -c max_connections=200" start >/dev/null \
      && break
    if ((attempt < PG_PORT_ATTEMPTS_MAX)) && grep -q 'Address already in use' "$PG_DATA/server.log"; then
      port="$(free_port $((port + 1)))" || fail "no free port for PostgreSQL"
      continue
    fi
    cat "$PG_DATA/server.log" >&2
    fail "PostgreSQL did not start"
  done
  export SLUICE_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
  info "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (data in $PG_DATA)"
}

# stop_postgres: stops the cluster start_postgres started (immediate mode) and removes its files.
stop_postgres() {
  [[ -n "${PG_DATA:-}" ]] || return 0
  local bin as=()
  bin="$(postgres_bin_dir)" || return 0
  [[ "$(id -u)" == 0 ]] && as=(runuser -u postgres --)
  "${as[@]}" "$bin/pg_ctl" -D "$PG_DATA" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
  rm -rf "$PG_DATA" "$PG_DATA.initdb.log"
  PG_DATA=""
}

# Debian packages the workspace's build needs, by the command that shows they are present:
#   cc: build-essential (libsqlite3-sys compiles the bundled SQLite, zstd-sys its C sources);
#   pkg-config: the -sys build scripts probe it; curl and ca-certificates: rustup; git: cargo git sources;
#   libclang-dev and clang: librocksdb-sys (the RocksDB state backend) runs bindgen, which loads libclang,
#   and compiles RocksDB's C++ with the C++ compiler of build-essential; postgresql: a server for the tests
#   (only its binaries are used: the tests start a throwaway cluster of their own).
#   libssl-dev: librdkafka's TLS (Kafka over SSL/SASL_SSL, e.g. MSK, Confluent Cloud) links the system OpenSSL;
#   openssl: scripts/gen-certs.sh (certificates for TLS clusters, used by the TLS tests).
# No protoc (protox compiles the .proto in Rust). Sluice's own TLS is rustls (no OpenSSL).
install_system_packages() {
  local missing=()
  command -v cc >/dev/null || missing+=(build-essential)
  command -v pkg-config >/dev/null || missing+=(pkg-config)
  command -v curl >/dev/null || missing+=(curl)
  command -v git >/dev/null || missing+=(git)
  dpkg -s ca-certificates >/dev/null 2>&1 || missing+=(ca-certificates)
  dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
  command -v clang >/dev/null || missing+=(clang)
  postgres_bin_dir >/dev/null || missing+=(postgresql)
  dpkg -s libssl-dev >/dev/null 2>&1 || missing+=(libssl-dev)
  command -v openssl >/dev/null || missing+=(openssl)
  if ((${#missing[@]} == 0)); then
    info "all present (cc, pkg-config, curl, git, ca-certificates, libclang-dev, clang, postgresql, libssl-dev, openssl)"
    return 0
  fi
  info "installing: ${missing[*]}"
  local sudo=()
  if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null || fail "missing packages (${missing[*]}) and not root; install them and rerun"
    sudo=(sudo)
  fi
  "${sudo[@]}" apt-get update -qq || fail "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    || fail "apt-get install ${missing[*]} failed"
}

# use_fast_debug_cxx: debug builds compile C++ with clang++ (a required package: bindgen loads libclang). The
# only C++ is RocksDB's (librocksdb-sys compiles 343 files), a third of a cold debug build's CPU time; at the
# debug profile's -O1, clang++ takes about 15 % less than g++ (measured on two of its largest files: 15.0 and
# 8.9 CPU-seconds against 17.2 and 10.6). Faster still were weighed and refused: -O0 (half the time, but the
# 10-million-key RocksDB test took 319 s instead of 61) and g++ -Og (fails on RocksDB's xxhash: its
# always_inline SSE functions are not inlined at -Og). Every script that builds the debug binaries calls
# it, so they all build RocksDB alike (cargo rebuilds it when the compiler changes); release builds
# (benchmarks, the container image) do not, and keep the default compiler.
use_fast_debug_cxx() {
  command -v clang++ >/dev/null || return 0
  local host
  host="$(rustc -vV 2>/dev/null | sed -n 's/^host: //p')"
  [[ -n "$host" ]] || return 0
  export "CXX_${host//-/_}=clang++"
}

install_rust() {
  if [[ -f "$HOME/.cargo/env" ]]; then
    # shellcheck source=/dev/null
    source "$HOME/.cargo/env"
  fi
  if ! command -v cargo >/dev/null; then
    info "cargo not found: installing Rust with rustup (minimal profile, stable)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
      | sh -s -- -y --no-modify-path --profile minimal --default-toolchain stable -c rustfmt -c clippy \
      || fail "the Rust installation failed"
    # shellcheck source=/dev/null
    source "$HOME/.cargo/env"
  fi
  if command -v rustup >/dev/null; then
    cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt || fail "cannot add rustfmt"
    cargo clippy --version >/dev/null 2>&1 || rustup component add clippy || fail "cannot add clippy"
  fi
  info "$(cargo --version), $(rustc --version)"
}
