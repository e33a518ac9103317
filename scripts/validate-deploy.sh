#!/usr/bin/env bash
# Validates the deployment files without a Kubernetes cluster or a container engine:
#   1. each kustomize overlay renders (`kubectl kustomize`) and passes `kubernetes-validate --strict` (the
#      Kubernetes OpenAPI schemas; unknown fields are errors);
#   2. deploy/compose/docker-compose.yml passes the compose-spec JSON schema;
#   3. every Sluice setting the manifests and the compose file give is a real one and `--check-config` accepts
#      it, container by container (scripts/deploy/check_settings.py);
#   4. the JobManagers can run as a leader and standbys (check_settings.py too): at least 2 replicas on PostgreSQL,
#      readiness on /ready (the leader only) and startup/liveness on /health, ADVERTISE_HOST from the pod IP, a
#      rolling update that finishes though only the leader is ever Ready, and no disruption budget that would never
#      let the leader go; in the compose file, JobManagers that share one database and one set of secrets, each
#      listed in the TaskManagers' JOBMANAGER;
#   5. deploy/monitoring renders (`kubectl kustomize`), passes kubernetes-validate --strict, and its dashboards
#      ConfigMap holds every dashboard of deploy/monitoring/grafana/dashboards (scripts/monitoring-check.sh tests
#      what they query); every file or directory the compose file mounts exists.
# kubernetes-validate, jsonschema and PyYAML go into a virtualenv under ~/.cache/sluice on first use. The
# compose schema is the one PyPI's docker-compose 1.29.2 carries (compose/config/compose_spec.json), unpacked
# once into the same cache; COMPOSE_SCHEMA=FILE uses another (e.g. schema/compose-spec.json of the compose-spec
# repository). Binaries come from SLUICE_BIN_DIR, else $CARGO_TARGET_DIR/debug (build them first).
#
# Usage: scripts/validate-deploy.sh            (from anywhere; exit 0 when everything passes)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

readonly CACHE_DIR="${HOME}/.cache/sluice"
readonly VENV="${CACHE_DIR}/venv-deploy"
readonly OVERLAYS=(gke eks)
readonly COMPOSE_FILE=deploy/compose/docker-compose.yml
readonly BIN_DIR="${SLUICE_BIN_DIR:-${CARGO_TARGET_DIR:-${CACHE_DIR}/target}/debug}"
# The Kubernetes version whose schemas the manifests are checked against (kubernetes-validate --list-versions).
readonly KUBERNETES_VERSION="${KUBERNETES_VERSION:-1.31.0}"

section "tools"
command -v kubectl >/dev/null || fail "kubectl is missing (it renders the kustomize overlays)"
if [[ ! -x "${VENV}/bin/kubernetes-validate" || ! -x "${VENV}/bin/jsonschema" ]]; then
  info "installing kubernetes-validate, jsonschema and PyYAML into ${VENV}"
  python3 -m venv "${VENV}"
  "${VENV}/bin/pip" install --quiet kubernetes-validate jsonschema pyyaml
fi
schema="${COMPOSE_SCHEMA:-${CACHE_DIR}/compose-spec/compose_spec.json}"
if [[ ! -f "${schema}" ]]; then
  info "unpacking the compose-spec schema from docker-compose 1.29.2 (PyPI) into ${CACHE_DIR}/compose-spec"
  tmp=$(mktemp -d)
  "${VENV}/bin/pip" download --quiet --no-deps --dest "${tmp}" docker-compose==1.29.2
  mkdir -p "${CACHE_DIR}/compose-spec"
  "${VENV}/bin/python" -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read("compose/config/compose_spec.json"))' \
    "${tmp}"/docker_compose-1.29.2-*.whl >"${schema}"
  rm -rf "${tmp}"
fi
for binary in sluice-jobmanager sluice-taskmanager; do
  [[ -x "${BIN_DIR}/${binary}" ]] || fail "${BIN_DIR}/${binary} is missing: build the workspace or set SLUICE_BIN_DIR"
done
ok "kubectl $(kubectl version --client -o json | "${VENV}/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])'), schema ${schema}, binaries in ${BIN_DIR}"

rendered_dir=$(mktemp -d)
trap 'rm -rf "${rendered_dir}"' EXIT
for overlay in "${OVERLAYS[@]}"; do
  section "kubernetes: overlays/${overlay}"
  rendered="${rendered_dir}/${overlay}.yaml"
  kubectl kustomize "deploy/k8s/overlays/${overlay}" >"${rendered}" || fail "overlays/${overlay} does not render"
  info "rendered $(grep -c '^kind:' "${rendered}") objects"
  "${VENV}/bin/kubernetes-validate" --strict --kubernetes-version "${KUBERNETES_VERSION}" "${rendered}" \
    || fail "overlays/${overlay}: kubernetes-validate --strict refused it"
  "${VENV}/bin/python" scripts/deploy/check_settings.py k8s "${rendered}" "${BIN_DIR}" \
    || fail "overlays/${overlay}: a setting is unknown or invalid, or the JobManagers cannot lead and stand by"
  ok "overlays/${overlay} renders, validates, every setting is real, and the JobManagers run as leader and standby"
done

section "kubernetes: deploy/monitoring"
rendered="${rendered_dir}/monitoring.yaml"
kubectl kustomize deploy/monitoring >"${rendered}" || fail "deploy/monitoring does not render"
"${VENV}/bin/kubernetes-validate" --strict --quiet --kubernetes-version "${KUBERNETES_VERSION}" "${rendered}" \
  || fail "deploy/monitoring: kubernetes-validate --strict refused it"
"${VENV}/bin/python" - "${rendered}" deploy/monitoring/grafana/dashboards <<'PY' \
  || fail "deploy/monitoring: the dashboards ConfigMap is not the dashboards folder"
import json, os, sys
import yaml
rendered, folder = sys.argv[1], sys.argv[2]
maps = {d["metadata"]["name"]: d for d in yaml.safe_load_all(open(rendered)) if d and d["kind"] == "ConfigMap"}
dashboards = maps.get("sluice-grafana-dashboards")
if dashboards is None or dashboards["metadata"].get("labels", {}).get("grafana_dashboard") != "1":
    sys.exit("    no ConfigMap sluice-grafana-dashboards labelled grafana_dashboard: \"1\"")
files = sorted(f for f in os.listdir(folder) if f.endswith(".json"))
if sorted(dashboards["data"]) != files:
    sys.exit(f"    the ConfigMap holds {sorted(dashboards['data'])}, the folder {files}: list every dashboard in "
             "deploy/monitoring/kustomization.yaml")
for name, text in dashboards["data"].items():
    uid = json.loads(text).get("uid")
    if not uid:
        sys.exit(f"    {name}: a dashboard without a uid is duplicated at every reload")
print(f"    ConfigMaps {', '.join(sorted(maps))}; dashboards {', '.join(files)}")
PY
ok "deploy/monitoring renders, validates, and ships every dashboard"

section "compose: ${COMPOSE_FILE}"
"${VENV}/bin/python" - "${schema}" "${COMPOSE_FILE}" <<'PY' || fail "${COMPOSE_FILE} does not pass the compose-spec schema"
import json, sys
import jsonschema, yaml
schema = json.load(open(sys.argv[1]))
document = yaml.safe_load(open(sys.argv[2]))
errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(document), key=lambda e: list(e.path))
for error in errors:
    print(f"    {'/'.join(map(str, error.path)) or '(top)'}: {error.message}", file=sys.stderr)
sys.exit(1 if errors else 0)
PY
"${VENV}/bin/python" - "${COMPOSE_FILE}" <<'PY' || fail "${COMPOSE_FILE} mounts a file or directory that does not exist"
import os, sys
import yaml
path = sys.argv[1]
missing = []
for name, service in yaml.safe_load(open(path))["services"].items():
    for volume in service.get("volumes", []):
        source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
        if source.startswith((".", "/")) and not os.path.exists(os.path.join(os.path.dirname(path), source)):
            missing.append(f"    service {name}: {source}")
if missing:
    sys.exit("\n".join(missing))
PY
"${VENV}/bin/python" scripts/deploy/check_settings.py compose "${COMPOSE_FILE}" "${BIN_DIR}" \
  || fail "${COMPOSE_FILE}: a setting is unknown or invalid, or its JobManagers cannot run as leader and standby"
ok "${COMPOSE_FILE} passes the compose-spec schema, every file it mounts exists, and every setting is real"
