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
   drain timeout (TM_DRAIN_TIMEOUT_MS) by DRAIN_MARGIN_S, or a drain is cut short by SIGKILL;
4. the JobManagers must be able to run as a leader and standbys (`jobmanager_problems`,
   `compose_jobmanager_problems`): on Kubernetes a Deployment of at least JOBMANAGER_REPLICAS_MIN replicas whose
   rolling update can finish although only the leader is ever Ready, readiness on /ready and startup/liveness on
   /health, ADVERTISE_HOST from the pod IP, a PostgreSQL DATABASE_URL, and no disruption budget that would never let
   the leader be evicted; in a compose file with several JobManagers, each advertising its own host, one PostgreSQL
   database, one admin token file and one cluster secret, and TaskManagers whose JOBMANAGER lists them all.

Usage: check_settings.py k8s RENDERED.yaml BIN_DIR | check_settings.py compose COMPOSE.yml BIN_DIR

`check_settings.py replay RENDERED.yaml FIRST_IP` prints, as JSON, what a test needs to start each Sluice pod of
the manifests as a container on one host (tests/tests/deploy_replay.rs): per pod its command, args and
environment (the downward API's pod IP replaced by a distinct 127.0.0.x from FIRST_IP on, the pod name kept, the
database URL left for the test), its volume mounts, user and read-only root; each Service's name with the IP of
the first pod it selects (`services`: a Service of the JobManagers routes to the leader, and the pod a replay
starts first leads), and with the IPs of all of them (`service_endpoints`); a Deployment's pods are named
NAME-pod-0, NAME-pod-1, ... `check_settings.py replay-compose COMPOSE.yml FIRST_IP` does the same for the compose
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
# JobManagers the manifests run: a leader and at least one standby that takes over when it fails.
JOBMANAGER_REPLICAS_MIN = 2
# What the JobManager answers on: /health 200 on every JobManager (startup, liveness), /ready 200 on the leader only
# (readiness: the Services' endpoints).
HEALTH_PATH = "/health"
READY_PATH = "/ready"
POSTGRES_SCHEMES = ("postgres://", "postgresql://")
# A Deployment's rollingUpdate when it gives none.
ROLLING_UPDATE_DEFAULT = {"maxSurge": "25%", "maxUnavailable": "25%"}
# sluice-jobmanager's default data directory (DATA_DIR), where it generates the secrets it is not given.
JOBMANAGER_DATA_DIR_DEFAULT = "data/jobmanager"


def seconds(text):
    """A compose duration ("2m", "90s", "1m30s", "1.5s", "500ms") in seconds; None if it is not one."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(text))
    if not parts or "".join(a + u for a, u in parts) != str(text):
        return None
    return sum(float(amount) * units[unit] for amount, unit in parts)


def scaled(value, total, round_up):
    """A Kubernetes IntOrString (`2`, `"50%"`) as a number of pods out of `total`, rounded as Kubernetes does."""
    text = str(value)
    if text.endswith("%"):
        percent = int(text[:-1])
        return -(-total * percent // 100) if round_up else total * percent // 100
    return int(text)


def selects(selector, labels):
    """Whether a label selector (only matchLabels is used here) selects a pod with `labels`."""
    match = (selector or {}).get("matchLabels", {})
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


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


def pod_name(workload, i):
    """The name of the workload's pod number `i`: a StatefulSet's own (NAME-i), a stand-in for a Deployment's."""
    name = workload["metadata"]["name"]
    return f"{name}-{i}" if workload["kind"] == "StatefulSet" else f"{name}-pod-{i}"


def k8s_containers(documents):
    """(where, binary, environment) for each Sluice container of each pod the workloads would start."""
    config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in documents if d.get("kind") == "ConfigMap"}
    for doc in documents:
        if doc.get("kind") not in ("Deployment", "StatefulSet"):
            continue
        name = doc["metadata"]["name"]
        replicas = doc["spec"].get("replicas", 1)
        pod_names = [pod_name(doc, i) for i in range(replicas)]
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


def probe_path(container, probe):
    """The path of a container's HTTP probe; None when it has no such probe, "" when the probe is no httpGet."""
    if probe not in container:
        return None
    return container[probe].get("httpGet", {}).get("path", "")


def database_url_source(container, config_maps):
    """Where a container's DATABASE_URL comes from: ("value", URL), ("secret", "NAME/KEY") or None."""
    source = None
    for env_from in container.get("envFrom", []):
        data = config_maps.get((env_from.get("configMapRef") or {}).get("name"), {})
        if "DATABASE_URL" in data:
            source = ("value", data["DATABASE_URL"])
    for var in container.get("env", []):
        if var["name"] != "DATABASE_URL":
            continue
        ref = (var.get("valueFrom") or {}).get("secretKeyRef")
        source = ("secret", f"{ref['name']}/{ref['key']}") if ref else ("value", var.get("value", ""))
    return source


def jobmanager_problems(documents):
    """What keeps the manifests' JobManagers from running as a leader and standbys (see the module's point 4), and a
    line saying what was checked for each JobManager workload."""
    problems, checked = [], []
    config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in documents if d.get("kind") == "ConfigMap"}
    budgets = [d for d in documents if d.get("kind") == "PodDisruptionBudget"]
    for doc in documents:
        if doc.get("kind") not in ("Deployment", "StatefulSet", "DaemonSet"):
            continue
        template = doc["spec"]["template"]
        containers = [c for c in template["spec"]["containers"] if binary_of(c.get("command")) == "sluice-jobmanager"]
        if not containers:
            continue
        where = f"{doc['kind']} {doc['metadata']['name']}"
        if doc["kind"] != "Deployment":
            problems.append(f"{where}: the JobManagers are expected in a Deployment")
            continue
        problems_before = len(problems)
        replicas = doc["spec"].get("replicas", 1)
        if replicas < JOBMANAGER_REPLICAS_MIN:
            problems.append(f"{where}: {replicas} replica(s); at least {JOBMANAGER_REPLICAS_MIN} (a leader and a "
                            f"standby that takes over when it fails)")
        # Only the leader is ever Ready, so it is the one available pod. The controller stops old pods only while
        # the available ones stay at replicas - maxUnavailable or more: below `replicas` it never stops the old
        # leader, the new pods (standbys) never get Ready, and the rollout hangs.
        strategy = doc["spec"].get("strategy", {})
        if strategy.get("type", "RollingUpdate") != "RollingUpdate":
            problems.append(f"{where}: strategy {strategy.get('type')}: it stops every JobManager before starting "
                            f"one, so none is there to take over the lease; use RollingUpdate (maxSurge 1, "
                            f"maxUnavailable 100%)")
        else:
            rolling = {**ROLLING_UPDATE_DEFAULT, **strategy.get("rollingUpdate", {})}
            unavailable = scaled(rolling["maxUnavailable"], replicas, round_up=False)
            if unavailable < replicas:
                problems.append(f"{where}: rollingUpdate.maxUnavailable {rolling['maxUnavailable']} is {unavailable} "
                                f"of {replicas} pods: only the leader is ever Ready, so the old leader would never be "
                                f"stopped and a rollout would hang; use 100%")
            if scaled(rolling["maxSurge"], replicas, round_up=True) < 1:
                problems.append(f"{where}: rollingUpdate.maxSurge {rolling['maxSurge']}: the old JobManagers would "
                                f"stop before a new one is created; use 1")
        for container in containers:
            at = f"{where}/{container['name']}"
            if probe_path(container, "readinessProbe") != READY_PATH:
                problems.append(f"{at}: the readinessProbe must be GET {READY_PATH} (200 on the leader only), so the "
                                f"Services send TaskManagers and users to the leader; it is "
                                f"{probe_path(container, 'readinessProbe')!r}")
            for probe in ("startupProbe", "livenessProbe"):
                path = probe_path(container, probe)
                if (path is None and probe == "livenessProbe") or (path is not None and path != HEALTH_PATH):
                    problems.append(f"{at}: the {probe} must be GET {HEALTH_PATH} (200 on leader and standby alike; "
                                    f"{READY_PATH} would restart every standby); it is "
                                    f"{'missing' if path is None else repr(path)}")
            advertise = [v for v in container.get("env", []) if v["name"] == "ADVERTISE_HOST"]
            value_from = (advertise[0].get("valueFrom") or {}) if advertise else {}
            field = (value_from.get("fieldRef") or {}).get("fieldPath")
            if field != "status.podIP":
                problems.append(f"{at}: ADVERTISE_HOST must come from the downward API's status.podIP (each "
                                f"JobManager's own address, written into the lease); it is "
                                f"{advertise[0] if advertise else 'not set'}")
            source = database_url_source(container, config_maps)
            if replicas > 1:
                if source is None:
                    problems.append(f"{at}: no DATABASE_URL: the default is a SQLite file, which only one JobManager "
                                    f"may use; {replicas} replicas need PostgreSQL")
                elif source[0] == "value" and not source[1].startswith(POSTGRES_SCHEMES):
                    problems.append(f"{at}: DATABASE_URL {source[1].split(':', 1)[0]}:... is not PostgreSQL; "
                                    f"{replicas} replicas elect their leader in a PostgreSQL database")
        # A budget counts Ready pods, and only the leader is: it can be evicted only if the budget wants no pod
        # healthy (desired healthy pods 0).
        labels = template["metadata"].get("labels", {})
        for budget in budgets:
            if not selects(budget["spec"].get("selector"), labels):
                continue
            spec = budget["spec"]
            if "minAvailable" in spec:
                desired = scaled(spec["minAvailable"], replicas, round_up=True)
            else:
                desired = replicas - scaled(spec.get("maxUnavailable", 0), replicas, round_up=True)
            if desired > 0:
                problems.append(f"{where}: PodDisruptionBudget {budget['metadata']['name']} wants {desired} healthy "
                                f"(Ready) pod(s), but only the leader is ever Ready: the leader could never be evicted "
                                f"and every drain of its node would hang; use maxUnavailable 100%")
        if len(problems) > problems_before:
            continue
        source = database_url_source(containers[0], config_maps)
        database = "unset" if source is None else f"from Secret {source[1]}" if source[0] == "secret" else "PostgreSQL"
        rolling = ", ".join(f"{k} {v}" for k, v in strategy.get("rollingUpdate", {}).items())
        checked.append(f"{where}: {replicas} replicas, {strategy.get('type', 'RollingUpdate')} ({rolling}), "
                       f"readiness {probe_path(containers[0], 'readinessProbe')}, liveness "
                       f"{probe_path(containers[0], 'livenessProbe')}, ADVERTISE_HOST from the pod IP, DATABASE_URL "
                       f"{database}")
    if not checked and not problems:
        problems.append("no Deployment runs sluice-jobmanager")
    return problems, checked


def volume_location(volumes, path):
    """(source, path inside it) of the compose volume holding `path` (the longest mount target that contains it);
    None when it is on no volume."""
    best = None
    for volume in volumes:
        if not isinstance(volume, str) or volume.count(":") not in (1, 2):
            continue
        source, target = volume.split(":")[:2]
        target = target.rstrip("/")
        if (path == target or path.startswith(target + "/")) and (best is None or len(target) > len(best[1])):
            best = (source, target)
    return None if best is None else (best[0], path[len(best[1]):].lstrip("/"))


def env_of(service):
    """A compose service's environment as a dict of strings (it may be written as a list of NAME=value)."""
    env = service.get("environment", {})
    return {k: str(v) for k, v in (dict(i.split("=", 1) for i in env) if isinstance(env, list) else env).items()}


def shared_files(services, variable, file_name, generates):
    """Where each service reads the file `variable` names, as (volume, path inside it) when a volume holds it, else
    (service, path); a service without the variable uses the JobManager's generated `<DATA_DIR>/<file_name>` when
    `generates(name, env)` says it makes one."""
    files = {}
    for name, service in services.items():
        env = env_of(service)
        path = env.get(variable)
        if path is None and generates(name, env):
            path = env.get("DATA_DIR", JOBMANAGER_DATA_DIR_DEFAULT).rstrip("/") + "/" + file_name
        if path is not None:
            files[name] = volume_location(service.get("volumes", []), path) or (f"service {name}", path)
    return files


def compose_jobmanager_problems(compose):
    """Several JobManagers in a compose file: each advertises its own host, they share one PostgreSQL database, one
    admin token file and one cluster secret (the TaskManagers' too), and every TaskManager's JOBMANAGER lists them
    all."""
    problems = []
    services = compose.get("services", {})

    jobmanagers = {n: s for n, s in services.items() if binary_of(s.get("command")) == "sluice-jobmanager"}
    taskmanagers = {n: s for n, s in services.items() if binary_of(s.get("command")) == "sluice-taskmanager"}
    # The cluster secret every Sluice service uses must be one file: a JobManager without CLUSTER_SECRET_FILE
    # generates its own in its data directory, which a standby must not do.
    secrets = shared_files({**jobmanagers, **taskmanagers}, "CLUSTER_SECRET_FILE", "cluster.secret",
                           lambda name, env: name in jobmanagers)
    if len(set(secrets.values())) > 1:
        problems.append("the Sluice services do not share one cluster secret: "
                        + ", ".join(f"{n} {s[0]}:{s[1]}" for n, s in secrets.items()))
    if len(jobmanagers) < 2:
        return problems
    # Likewise the admin token (else clients' token stops working when a standby takes over).
    tokens = shared_files(jobmanagers, "ADMIN_TOKEN_FILE", "admin.token",
                          lambda name, env: "ADMIN_TOKENS" not in env)
    if len(set(tokens.values())) > 1:
        problems.append("the JobManagers do not share one admin token file: "
                        + ", ".join(f"{n} {s[0]}:{s[1]}" for n, s in tokens.items()))
    envs = {name: env_of(service) for name, service in jobmanagers.items()}
    hosts = {name: env.get("ADVERTISE_HOST") for name, env in envs.items()}
    for name, host in hosts.items():
        if not host:
            problems.append(f"service {name}: no ADVERTISE_HOST; with several JobManagers each writes the host it is "
                            f"reached at into the lease (its service name)")
    if len(set(hosts.values())) < len(hosts):
        problems.append(f"the JobManagers advertise the same host: {hosts}")
    urls = {name: env.get("DATABASE_URL", "") for name, env in envs.items()}
    for name, url in urls.items():
        if not url.startswith(POSTGRES_SCHEMES):
            problems.append(f"service {name}: DATABASE_URL is not PostgreSQL: {len(jobmanagers)} JobManagers elect "
                            f"their leader in one PostgreSQL database")
    if len(set(urls.values())) > 1:
        problems.append("the JobManagers name different databases; they must share one")
    for tm_name, service in taskmanagers.items():
        listed = {entry.strip().rsplit(":", 1)[0] for entry in env_of(service).get("JOBMANAGER", "").split(",")}
        missing = sorted(n for n in jobmanagers if n not in listed and hosts.get(n) not in listed)
        if missing:
            problems.append(f"service {tm_name}: JOBMANAGER does not list {', '.join(missing)}")
    return problems


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
    pods, services, endpoints = [], {}, {}
    config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in documents if d.get("kind") == "ConfigMap"}
    for doc in documents:
        if doc.get("kind") not in ("Deployment", "StatefulSet"):
            continue
        name = doc["metadata"]["name"]
        template = doc["spec"]["template"]
        spec = template["spec"]
        replicas = doc["spec"].get("replicas", 1)
        for i in range(replicas):
            pod = pod_name(doc, i)
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
        ips = list(dict.fromkeys(p["ip"] for p in chosen))
        if not ips:
            continue
        endpoints[doc["metadata"]["name"]] = ips
        # One address per name (a hosts entry). A Service with a virtual IP over several pods is the JobManagers'
        # (the one endpoint is the leader, readiness on /ready): its first pod, the one a replay starts first and
        # so the one that leads. A headless Service's name stands for all its pods: only when it has one.
        if len(ips) == 1 or doc["spec"].get("clusterIP") != "None":
            services[doc["metadata"]["name"]] = ips[0]
    return {"pods": pods, "services": services, "service_endpoints": endpoints}


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
            documents = [d for d in yaml.safe_load_all(f) if d]
            containers = list(k8s_containers(documents))
        else:
            compose = yaml.safe_load(f)
            containers = list(compose_containers(compose))
    if not containers:
        sys.exit(f"{path}: no container runs {' or '.join(BINARIES)}")
    known = {b: known_settings(f"{bin_dir}/{b}") for b in BINARIES}
    if kind == "k8s":
        problems, checked = jobmanager_problems(documents)
    else:
        problems, checked = compose_jobmanager_problems(compose), []
    for line in checked:
        print(f"    {line}")
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
