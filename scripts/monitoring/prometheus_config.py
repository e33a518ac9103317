"""The Prometheus configuration scripts/monitoring-check.sh runs: deploy/monitoring/prometheus-kubernetes.yml
itself, with Kubernetes service discovery replaced by a file of the pods Kubernetes would list for the manifests
of deploy/k8s/base, whose ports point at the local test cluster.

So the relabelling that production relies on (keep Sluice's pods by label and annotation, one target per pod on
the port named for metrics, `component` and `instance` from the pod) runs for real, and the dashboards and rules
are evaluated on series labelled exactly as on Kubernetes. Debian's Prometheus is built without Kubernetes
discovery (`kubernetes_sd_configs` is an unknown field to it), so this is also how that file gets checked here.

Each discovered target carries the `__meta_kubernetes_*` labels that Prometheus's pod role gives one container
port of a pod: the pod's name, namespace, IP, labels and annotations from the manifests' pod templates, and the
container's port name and number. Besides Sluice's pods, the file lists a pod of another application that asks to
be scraped too, which the configuration must drop.

Usage: prometheus_config.py OUT_DIR K8S_CONFIG RULES K8S_BASE_DIR CLUSTER_DIR READ_TOKEN_FILE
  CLUSTER_DIR holds jobmanager/jobmanager.addr and <tm>/taskmanager.addr (scripts/lib.sh's layout).
  Writes OUT_DIR/prometheus.yml and OUT_DIR/pods.json; prints the targets that must be scraped, one a line:
  `<component> <instance>`.
"""
import glob
import json
import os
import re
import sys

import yaml

# The namespace deploy/k8s/base deploys to (its kustomization.yaml).
NAMESPACE = "sluice"
# Scrape and rule evaluation every second, so that rates and rules have data within seconds.
INTERVAL = "1s"
# An address nothing listens on, for ports the test cluster has no counterpart of.
NOWHERE = "127.0.0.1:1"


def sanitize(name):
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def pod_templates(base_dir):
    """(workload name, pod template) of each Deployment and StatefulSet in the manifests."""
    for path in sorted(glob.glob(os.path.join(base_dir, "*.yaml"))):
        with open(path) as f:
            for document in yaml.safe_load_all(f):
                if document and document.get("kind") in ("Deployment", "StatefulSet"):
                    yield document["metadata"]["name"], document["spec"]["template"]


def pod_targets(pod_name, template, addresses):
    """One file_sd group per container port of the pod, as the pod role discovers them."""
    metadata = template["metadata"]
    pod_labels = {
        "__meta_kubernetes_namespace": NAMESPACE,
        "__meta_kubernetes_pod_name": pod_name,
        "__meta_kubernetes_pod_ip": "127.0.0.1",
        "__meta_kubernetes_pod_node_name": "test-node",
        "__meta_kubernetes_pod_ready": "true",
        "__meta_kubernetes_pod_phase": "Running",
    }
    for key, value in metadata.get("labels", {}).items():
        pod_labels[f"__meta_kubernetes_pod_label_{sanitize(key)}"] = value
        pod_labels[f"__meta_kubernetes_pod_labelpresent_{sanitize(key)}"] = "true"
    for key, value in metadata.get("annotations", {}).items():
        pod_labels[f"__meta_kubernetes_pod_annotation_{sanitize(key)}"] = value
        pod_labels[f"__meta_kubernetes_pod_annotationpresent_{sanitize(key)}"] = "true"
    for container in template["spec"]["containers"]:
        for port in container.get("ports", []):
            yield {
                "targets": [addresses.get(port.get("name"), NOWHERE)],
                "labels": {
                    **pod_labels,
                    "__meta_kubernetes_pod_container_name": container["name"],
                    "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                    "__meta_kubernetes_pod_container_port_number": str(port["containerPort"]),
                    "__meta_kubernetes_pod_container_port_protocol": port.get("protocol", "TCP"),
                },
            }


def read_addr(path):
    with open(path) as f:
        return json.load(f)


def main():
    out_dir, k8s_config, rules, base_dir, cluster_dir, token_file = sys.argv[1:7]
    jobmanager = read_addr(os.path.join(cluster_dir, "jobmanager", "jobmanager.addr"))
    taskmanagers = [read_addr(p) for p in sorted(glob.glob(os.path.join(cluster_dir, "*", "taskmanager.addr")))]
    templates = dict(pod_templates(base_dir))
    groups = []
    expected = []
    # The test cluster's processes as the pods of the manifests: pod names as Kubernetes makes them.
    jobmanager_pod = "sluice-jobmanager-7d9f8b6c5-x2x4k"
    groups += pod_targets(jobmanager_pod, templates["sluice-jobmanager"],
                          {"rest": jobmanager["rest"], "rpc": jobmanager["rpc"]})
    expected.append(f"jobmanager {jobmanager_pod}")
    for i, taskmanager in enumerate(taskmanagers):
        pod = f"sluice-taskmanager-{i}"
        groups += pod_targets(pod, templates["sluice-taskmanager"],
                              {"rpc": taskmanager["rpc"], "data": taskmanager["data"],
                               "metrics": taskmanager["metrics"]})
        expected.append(f"taskmanager {pod}")
    # Another application's pod that asks to be scraped: not Sluice's to scrape.
    other = {"metadata": {"labels": {"app.kubernetes.io/name": "postgres"},
                          "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9187"}},
             "spec": {"containers": [{"name": "exporter", "ports": [{"name": "metrics", "containerPort": 9187}]}]}}
    groups += pod_targets("postgres-0", other, {"metrics": jobmanager["rest"]})

    with open(k8s_config) as f:
        config = yaml.safe_load(f)
    config["global"].update(scrape_interval=INTERVAL, scrape_timeout=INTERVAL, evaluation_interval=INTERVAL)
    config["rule_files"] = [os.path.abspath(rules)]
    pods_file = os.path.join(out_dir, "pods.json")
    for job in config["scrape_configs"]:
        if "kubernetes_sd_configs" not in job:
            sys.exit(f"scrape job {job['job_name']} of {k8s_config} has no kubernetes_sd_configs to stand in for")
        del job["kubernetes_sd_configs"]
        job["file_sd_configs"] = [{"files": [pods_file], "refresh_interval": INTERVAL}]
        if job["job_name"] == "sluice-jobmanager":
            # The local JobManager runs with METRICS_AUTH=read: Prometheus sends a read-only token, as the
            # comment of prometheus-kubernetes.yml says to.
            job["authorization"] = {"type": "Bearer", "credentials_file": os.path.abspath(token_file)}
    with open(pods_file, "w") as f:
        json.dump(groups, f, indent=1)
    with open(os.path.join(out_dir, "prometheus.yml"), "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    print("\n".join(expected))


if __name__ == "__main__":
    main()
