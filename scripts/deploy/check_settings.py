"""Checks that every setting a deployment file gives Sluice is a real one, and valid together.

Reads rendered Kubernetes manifests (a `kubectl kustomize` output) or a compose file, finds each container that
runs sluice-jobmanager or sluice-taskmanager, and builds the environment that container would get: its `env`
(values from the downward API and from Secrets replaced by stand-ins: a distinct 10.0.0.x per pod IP, the pod's
name, a placeholder database URL) and the ConfigMaps it takes with `envFrom`. Then:

1. every variable must be a setting of that binary (the `(NAME)` list `--check-config` prints) or one the
   object-store client reads (AWS_*, GOOGLE_*), so a misspelt or invented variable is refused instead of being
   silently ignored;
2. the binary's own `--check-config` must accept the environment (exit 0): types, ranges, choices, and the checks
   across settings;
3. a TaskManager's grace period (`terminationGracePeriodSeconds`, compose's `stop_grace_period`) must exceed its
   drain timeout (TM_DRAIN_TIMEOUT_MS) by DRAIN_MARGIN_S, or a drain is cut short by SIGKILL.

Usage: check_settings.py k8s RENDERED.yaml BIN_DIR | check_settings.py compose COMPOSE.yml BIN_DIR

`check_settings.py replay RENDERED.yaml FIRST_IP` prints, as JSON, what a test needs to start each Sluice pod of
the manifests as a container on one host (tests/tests/deploy_replay.rs): per pod its command, args and
environment (the downward API's pod IP replaced by a distinct 127.0.0.x from FIRST_IP on, the pod name kept, the
database URL left for the test), its volume mounts, user and read-only root; and each Service's name with the IP
of the pod it selects. `check_settings.py replay-compose COMPOSE.yml FIRST_IP` does the same for the compose
file's Sluice services (volumes as given: named ones and bind mounts), every other service's name mapped to
127.0.0.1, where the test runs what stands in for it.
"""
import json
import re
import subprocess
import sys

import yaml

BINARIES = ("sluice-jobmanager", "sluice-taskmanager")
# Variables the object-store client (object_store's from_env builders) reads, and the log filter.
FOREIGN = re.compile(r"^(AWS_[A-Z0-9_]+|GOOGLE_[A-Z0-9_]+|RUST_LOG)$")
DATABASE_URL_STAND_IN = "postgres://sluice:stand-in@postgres:5432/sluice"
# sluice-taskmanager's default --drain-timeout-ms (DRAIN_TIMEOUT_MS_DEFAULT in taskmanager/src/config.rs).
DRAIN_TIMEOUT_MS_DEFAULT = 60_000
# What a TaskManager may still do after its drain timeout before it exits: tell the JobManager it left (one call, at
# most 5 s: RPC_TIMEOUT), let its control server finish the calls in progress (at most 15 s:
# CONTROL_REQUEST_TIMEOUT) and give the data runtime up to 5 s (DATA_RUNTIME_SHUTDOWN_TIMEOUT) to stop.
DRAIN_MARGIN_S = 5 + 15 + 5
# The platforms' defaults when a file sets none.
K8S_GRACE_DEFAULT_S = 30
COMPOSE_GRACE_DEFAULT_S = 10


def seconds(text):
    """A compose duration ("2m", "90s", "1m30s", "1.5s", "500ms") in seconds; None if it is not one."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(text))
    if not parts or "".join(a + u for a, u in parts) != str(text):
        return None
    return sum(float(amount) * units[unit] for amount, unit in parts)


def known_settings(binary):
    """The environment variables `binary --check-config` lists, one per setting."""
    out = subprocess.run([binary, "--check-config"], env={"CLUSTER_SECRET_FILE": "/dev/null"},
                         capture_output=True, text=True, check=False).stdout
    names = set(re.findall(r"\(([A-Z0-9_]+)\)$", out, re.MULTILINE))
    if not names:
        sys.exit(f"{binary} --check-config listed no settings; is it a build with --check-config?")
    return names


def binary_of(command):
    for word in command or []:
        for binary in BINARIES:
            if word.endswith(binary):
                return binary
    return None


def container_env(where, container, config_maps, fields, secret):
    """The environment a container gets: its envFrom ConfigMaps, then its env. `fields` maps each downward-API field
    path to its stand-in; `secret(variable, value_from)` gives a secretKeyRef variable's value (None: left out)."""
    env = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref is None or ref.get("name") not in config_maps:
            raise SystemExit(f"{where}: envFrom names no ConfigMap of the manifests: {source}")
        env.update(config_maps[ref["name"]])
    for var in container.get("env", []):
        value_from = var.get("valueFrom")
        if value_from is None:
            env[var["name"]] = var.get("value", "")
        elif "fieldRef" in value_from:
            path = value_from["fieldRef"]["fieldPath"]
            if path not in fields:
                raise SystemExit(f"{where}: no stand-in for the field {path}")
            env[var["name"]] = fields[path]
        elif "secretKeyRef" in value_from:
            value = secret(var["name"], value_from)
            if value is not None:
                env[var["name"]] = value
        else:
            raise SystemExit(f"{where}: no stand-in for {var['name']}: {value_from}")
    return env


def k8s_containers(documents):
    """(where, binary, environment) for each Sluice container of each pod the workloads would start."""
    config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in documents if d.get("kind") == "ConfigMap"}
    for doc in documents:
        if doc.get("kind") not in ("Deployment", "StatefulSet"):
            continue
        name = doc["metadata"]["name"]
        replicas = doc["spec"].get("replicas", 1)
        pod_names = [f"{name}-{i}" for i in range(replicas)] if doc["kind"] == "StatefulSet" else [f"{name}-pod"]
        for container in doc["spec"]["template"]["spec"]["containers"]:
            binary = binary_of(container.get("command"))
            if binary is None:
                continue
            for n, pod in enumerate(pod_names, start=1):
                fields = {"metadata.name": pod, "status.podIP": f"10.0.0.{n}"}

                def secret(var, value_from):
                    if var != "DATABASE_URL":
                        raise SystemExit(f"{name}/{container['name']}: no stand-in for {var}: {value_from}")
                    return DATABASE_URL_STAND_IN

                env = container_env(f"{name}/{container['name']}", container, config_maps, fields, secret)
                grace = doc["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", K8S_GRACE_DEFAULT_S)
                yield f"{doc['kind']} {name} ({pod})", binary, env, grace


def compose_containers(compose):
    for name, service in compose.get("services", {}).items():
        binary = binary_of(service.get("command"))
        if binary is None:
            continue
        env = service.get("environment", {})
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        grace = seconds(service["stop_grace_period"]) if "stop_grace_period" in service else COMPOSE_GRACE_DEFAULT_S
        if grace is None:
            raise SystemExit(f"service {name}: stop_grace_period {service['stop_grace_period']!r} is no duration")
        yield f"service {name}", binary, {k: str(v) for k, v in env.items()}, grace


def replay(documents, first_ip):
    """The pods of the manifests as JSON for a replay, pod IPs counting up from FIRST_IP (127.0.0.x)."""
    prefix, last = first_ip.rsplit(".", 1)
    next_ip = int(last)
    pods, services = [], {}
    config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in documents if d.get("kind") == "ConfigMap"}
    for doc in documents:
        if doc.get("kind") not in ("Deployment", "StatefulSet"):
            continue
        name = doc["metadata"]["name"]
        template = doc["spec"]["template"]
        spec = template["spec"]
        replicas = doc["spec"].get("replicas", 1)
        for i in range(replicas):
            pod = f"{name}-{i}" if doc["kind"] == "StatefulSet" else f"{name}-pod"
            ip = f"{prefix}.{next_ip}"
            next_ip += 1
            for container in spec["containers"]:
                binary = binary_of(container.get("command"))
                if binary is None:
                    continue
                secrets = []

                def secret(var, _value_from):
                    secrets.append(var)  # the test gives its own value

                env = container_env(name, container, config_maps, {"status.podIP": ip, "metadata.name": pod}, secret)
                security = container.get("securityContext", {})
                pod_security = spec.get("securityContext", {})
                pods.append({
                    "workload": name,
                    "pod": pod,
                    "ip": ip,
                    "labels": template["metadata"].get("labels", {}),
                    "binary": binary,
                    "command": container.get("command", []),
                    "args": container.get("args", []),
                    "env": env,
                    "env_from_secrets": secrets,
                    "mounts": [{"path": m["mountPath"], "read_only": m.get("readOnly", False)}
                               for m in container.get("volumeMounts", [])],
                    "user": security.get("runAsUser", pod_security.get("runAsUser")),
                    "group": security.get("runAsGroup", pod_security.get("runAsGroup")),
                    "read_only_root": security.get("readOnlyRootFilesystem", False),
                    "grace_seconds": spec.get("terminationGracePeriodSeconds", K8S_GRACE_DEFAULT_S),
                })
    for doc in documents:
        if doc.get("kind") != "Service":
            continue
        selector = doc["spec"].get("selector", {})
        chosen = [p for p in pods if all(p["labels"].get(k) == v for k, v in selector.items())]
        if len(chosen) == 1:
            services[doc["metadata"]["name"]] = chosen[0]["ip"]
    return {"pods": pods, "services": services}


def replay_compose(compose, first_ip):
    """The compose file's Sluice services as JSON for a replay, addresses counting up from FIRST_IP."""
    prefix, last = first_ip.rsplit(".", 1)
    pods, services = [], {}
    for n, (name, service) in enumerate(compose.get("services", {}).items()):
        binary = binary_of(service.get("command"))
        if binary is None:
            services[name] = "127.0.0.1"
            continue
        ip = f"{prefix}.{int(last) + len(pods)}"
        services[name] = ip
        env = service.get("environment", {})
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        volumes = []
        for volume in service.get("volumes", []):
            if not isinstance(volume, str) or volume.count(":") not in (1, 2):
                raise SystemExit(f"service {name}: the replay takes SOURCE:TARGET[:ro] volumes only, not {volume!r}")
            source, target, *mode = volume.split(":")
            volumes.append({"source": source, "named": not source.startswith((".", "/")), "target": target,
                            "read_only": mode == ["ro"]})
        pods.append({"pod": name, "ip": ip, "binary": binary, "command": service.get("command", []),
                     "env": {k: str(v) for k, v in env.items()}, "volumes": volumes,
                     "grace": seconds(service.get("stop_grace_period", f"{COMPOSE_GRACE_DEFAULT_S}s"))})
    return {"pods": pods, "services": services}


def main():
    if sys.argv[1] == "replay-compose":
        with open(sys.argv[2]) as f:
            json.dump(replay_compose(yaml.safe_load(f), sys.argv[3]), sys.stdout, indent=1)
        return
    if sys.argv[1] == "replay":
        with open(sys.argv[2]) as f:
            documents = [d for d in yaml.safe_load_all(f) if d]
        json.dump(replay(documents, sys.argv[3]), sys.stdout, indent=1)
        return
    kind, path, bin_dir = sys.argv[1:4]
    with open(path) as f:
        if kind == "k8s":
            containers = list(k8s_containers([d for d in yaml.safe_load_all(f) if d]))
        else:
            containers = list(compose_containers(yaml.safe_load(f)))
    if not containers:
        sys.exit(f"{path}: no container runs {' or '.join(BINARIES)}")
    known = {b: known_settings(f"{bin_dir}/{b}") for b in BINARIES}
    problems = []
    for where, binary, env, grace in containers:
        drain_ms = env.get("TM_DRAIN_TIMEOUT_MS", str(DRAIN_TIMEOUT_MS_DEFAULT))
        if binary == "sluice-taskmanager" and drain_ms.isdigit():  # --check-config below reports a bad value
            drain_s = int(drain_ms) / 1000
            if grace < drain_s + DRAIN_MARGIN_S:
                problems.append(f"{where}: a grace period of {grace} s is shorter than the drain timeout ({drain_s:g} s) "
                                f"+ {DRAIN_MARGIN_S} s: a drain would be cut short by SIGKILL")
        unknown = sorted(v for v in env if v not in known[binary] and not FOREIGN.match(v))
        if unknown:
            problems.append(f"{where}: {', '.join(unknown)} is no setting of {binary}")
        check = subprocess.run([f"{bin_dir}/{binary}", "--check-config"], env=env, capture_output=True, text=True,
                               check=False)
        if check.returncode != 0:
            problems.append(f"{where}: {binary} --check-config exited {check.returncode}: {check.stderr.strip()}")
        else:
            print(f"    {where}: {binary} --check-config accepts its {len(env)} variables")
    for problem in problems:
        print(f"    PROBLEM {problem}", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
