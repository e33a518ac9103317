"""Waits until Prometheus scrapes exactly the expected targets, each up, or a deadline passes.

Expected targets are `<component> <instance>` lines (prometheus_config.py prints them). Every other target the
discovery offered must have been dropped by the relabelling: one more active target (another port of a pod,
another application's pod) fails, as does one of the expected missing or down.

Usage: targets.py PROMETHEUS_URL EXPECTED_FILE [--deadline-s N]
"""
import argparse
import json
import sys
import time
import urllib.request

POLL_INTERVAL_S = 0.5
HTTP_TIMEOUT_S = 10


def observe(url):
    """(active targets as {(component, instance): (health, last error)}, count of dropped targets)."""
    with urllib.request.urlopen(f"{url.rstrip('/')}/api/v1/targets", timeout=HTTP_TIMEOUT_S) as response:
        data = json.load(response)["data"]
    active = {}
    for target in data["activeTargets"]:
        labels = target["labels"]
        key = (labels.get("component", "?"), labels.get("instance", "?"))
        if key in active:
            active[key] = ("duplicate", f"scraped twice (also by {target['scrapePool']})")
        else:
            active[key] = (target["health"], target.get("lastError", ""))
    return active, len(data.get("droppedTargets", []))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("prometheus")
    parser.add_argument("expected")
    parser.add_argument("--deadline-s", type=float, default=30)
    args = parser.parse_args()
    with open(args.expected) as f:
        expected = {tuple(line.split()) for line in f if line.strip()}
    deadline = time.monotonic() + args.deadline_s
    while True:
        active, dropped = observe(args.prometheus)
        problems = [f"{c} {i}: not discovered" for c, i in sorted(expected - active.keys())]
        problems += [f"{c} {i}: scraped, but should have been dropped" for c, i in sorted(active.keys() - expected)]
        problems += [f"{c} {i}: {health} {error}".rstrip() for (c, i), (health, error) in sorted(active.items())
                     if (c, i) in expected and health != "up"]
        if not problems:
            print(f"    {len(active)} targets up ({', '.join(sorted(i for _, i in active))}); "
                  f"{dropped} discovered targets dropped by the relabelling")
            return 0
        if time.monotonic() >= deadline:
            print(f"error: the scraped targets are not the expected ones after {args.deadline_s:.0f}s:",
                  file=sys.stderr)
            for problem in problems:
                print(f"  - {problem}", file=sys.stderr)
            return 1
        time.sleep(POLL_INTERVAL_S)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except OSError as e:  # urllib's URLError and timeouts: Prometheus is gone
        sys.exit(f"error: Prometheus does not answer: {e}")
