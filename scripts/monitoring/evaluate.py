"""Evaluates every expression of the Grafana dashboards and the alert rules against a live Prometheus, until
each returns data or a deadline passes; exits 1 listing every expression that errs or returns nothing.

What "returns data" means, per kind:
  - a dashboard panel's query: at least one sample that is not NaN, after Grafana's variables are replaced as
    Grafana would with "All" selected (`$job` by the variable's allValue, `$__rate_interval` as BUILTINS says);
  - a dashboard variable's `label_values(metric, label)`: some series of `metric` has `label`;
  - an alert rule: its expression, or else (a threshold not crossed is an empty result, legitimately) its measured
    part, the expression without its trailing `<comparison> <number>` (rules must have that shape); and
    Prometheus evaluated the loaded rule without error;
  - and for all of them, every series selector in the expression matches a series on its own, so that a branch
    that cannot be empty (`x or vector(0)`, `absent(x)`) still fails when `x` is misspelled.
A query Prometheus refuses (bad syntax, an unknown function) fails at once; an empty one is retried every
POLL_INTERVAL_S until the deadline (series appear as the jobs run: a checkpoint, a restart, a window firing).

Usage: evaluate.py PROMETHEUS_URL RULES_FILE DASHBOARD.json... [--deadline-s N] [--expect-alerts A,B]
  --expect-alerts: alerts that must be seen pending or firing (once is enough: a gauge may dip below its
  threshold between two evaluations), with every annotation rendered (no `<no value>`).
"""
import argparse
import json
import math
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from promql import measured_part, selectors  # noqa: E402

# What Grafana's built-in variables become. The rate interval must hold at least two scrapes of the check's
# Prometheus (1 s) and not much more, so that rates follow the jobs within seconds; the range stands for the
# dashboard's time range (increase over it, quantiles over it).
BUILTINS = {"__rate_interval": "20s", "__interval": "5s", "__interval_ms": "5000", "__range": "5m",
            "__range_s": "300", "__range_ms": "300000"}
# How far back a selector's series may have been seen to count (the series API's window).
SERIES_LOOKBACK_S = 600
POLL_INTERVAL_S = 2.0
HTTP_TIMEOUT_S = 10
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(.*?)\s*,\s*)?(\w+)\s*\)\s*$")


class Refused(Exception):
    """Prometheus refused a query (an error that waiting will not fix)."""


class Prometheus:
    def __init__(self, url):
        self.url = url.rstrip("/")

    def get(self, path, **params):
        query = urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=HTTP_TIMEOUT_S) as response:
                body = json.load(response)
        except urllib.error.HTTPError as e:
            body = json.load(e)
            raise Refused(f"{body.get('errorType', e.code)}: {body.get('error', '')}") from None
        if body.get("status") != "success":
            raise Refused(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr):
        return self.get("/api/v1/query", query=expr)

    def series(self, selector):
        now = time.time()
        return self.get("/api/v1/series", **{"match[]": selector, "start": now - SERIES_LOOKBACK_S, "end": now})

    def metric_names(self):
        return set(self.get("/api/v1/label/__name__/values"))


class Expression:
    """One expression to check, where it comes from, and what was last seen of it."""

    def __init__(self, kind, where, expr, label=None, measured=None, name=None):
        self.kind = kind  # "panel", "variable", "rule"
        self.where = where
        self.name = name  # rules: the alert's name
        self.expr = expr
        self.label = label  # variables: the label whose values they list
        self.measured = measured  # rules: the expression without its threshold
        self.problem = "not evaluated yet"
        self.refused = False
        self.done = False
        self.passed_after_s = None  # seconds from the first evaluation to the one that passed


def substitute(expr, variables):
    """`expr` with Grafana's variables replaced; raises KeyError naming an unknown one."""

    def value(match):
        name = match.group(1) or match.group(2) or match.group(3)
        if name.isdigit():
            return match.group(0)  # `$1` in label_replace's replacement
        if name in BUILTINS:
            return BUILTINS[name]
        if name in variables:
            return variables[name]
        raise KeyError(name)

    return VARIABLE.sub(value, expr)


def panels(dashboard):
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels inside


def dashboard_expressions(path):
    with open(path) as f:
        dashboard = json.load(f)
    name = os.path.basename(path)
    variables = {}
    found = []
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "datasource":
            continue
        # "All", as the dashboards open: the variable's allValue.
        variables[variable["name"]] = variable.get("allValue") or ".*"
        query = variable.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        match = LABEL_VALUES.match(query or "")
        where = f"{name}: variable ${variable['name']}"
        if not match:
            expression = Expression("variable", where, query or "")
            expression.problem = "only label_values(metric, label) variable queries are checked"
            expression.refused = True
            found.append(expression)
            continue
        found.append(Expression("variable", where, match.group(1) or "", label=match.group(2)))
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            if "expr" not in target:
                continue
            where = f"{name}: panel {panel.get('title')!r} ({target.get('refId', '?')})"
            try:
                expr = substitute(target["expr"], variables)
            except KeyError as e:
                expression = Expression("panel", where, target["expr"])
                expression.problem = f"uses ${e.args[0]}, which the dashboard does not define"
                expression.refused = True
                found.append(expression)
                continue
            found.append(Expression("panel", where, expr))
    return found


def rule_expressions(path):
    with open(path) as f:
        rules = yaml.safe_load(f)
    found = []
    for group in rules.get("groups", []):
        for rule in group.get("rules", []):
            name = rule.get("alert") or rule.get("record")
            expr = " ".join(rule["expr"].split())
            found.append(Expression("rule", f"{os.path.basename(path)}: {name}", expr, measured=measured_part(expr),
                                    name=name))
    return found


def has_data(result):
    """Whether an instant query's result holds a sample that is not NaN."""
    if result["resultType"] in ("scalar", "string"):
        return True
    for sample in result["result"]:
        values = [sample["value"]] if "value" in sample else sample.get("values", [])
        if any(not math.isnan(float(v[1])) for v in values):
            return True
    return False


def missing_selectors(prometheus, expression, names):
    """The selectors of `expression` that match no series, each with why."""
    problems = []
    for selector in selectors(expression.expr):
        if prometheus.series(selector):
            continue
        name = selector.split("{", 1)[0]
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name and name not in names:
            problems.append(f"{selector}: no scraped target exports {base} (is the binary older than the metric?)")
        else:
            problems.append(f"{selector}: matches no series")
    return problems


def check(prometheus, expression, names, rule_health):
    """Evaluates `expression` once; sets `done`, or `problem` (and `refused` when waiting cannot help)."""
    if expression.kind == "variable":
        series = prometheus.series(expression.expr) if expression.expr else []
        ok = any(s.get(expression.label) for s in series)
        problem = None if ok else f"no series of {expression.expr or 'any metric'} has the label {expression.label}"
        problems = [problem] if problem else []
    else:
        problems = missing_selectors(prometheus, expression, names)
        result = prometheus.query(expression.expr)
        if not has_data(result):
            if expression.kind == "panel":
                problems.append("returns no data" if not result["result"] else "returns only NaN")
            elif expression.measured is None:
                problems.append("returns no data, and is not `<measured> <comparison> <number>` to check the rest")
            elif not has_data(prometheus.query(expression.measured)):
                problems.append(f"its measured part returns no data: {expression.measured}")
        if expression.kind == "rule":
            health = rule_health.get(expression.name)
            if health is None:
                problems.append("Prometheus has not loaded this rule")
            elif health[0] == "err":
                problems.append(f"Prometheus fails to evaluate it: {health[1]}")
            elif health[0] != "ok":
                problems.append(f"Prometheus has not evaluated it yet ({health[0]})")
    expression.done = not problems
    expression.problem = "; ".join(problems)


def loaded_rules(prometheus):
    health = {}
    for group in prometheus.get("/api/v1/rules")["groups"]:
        for rule in group["rules"]:
            health[rule["name"]] = (rule.get("health"), rule.get("lastError", ""))
    return health


def alert_problems(prometheus, expected, seen):
    """The expected alerts not seen pending or firing yet (`seen` keeps those that were, from one call to the
    next), and those whose annotations miss a value."""
    active = {}
    for alert in prometheus.get("/api/v1/alerts")["alerts"]:
        active.setdefault(alert["labels"]["alertname"], []).append(alert)
    problems = []
    for name in expected:
        for alert in active.get(name, []):
            seen.add(name)
            for key, text in alert.get("annotations", {}).items():
                if "<no value>" in text:
                    problems.append(f"alert {name} {alert['labels']}: annotation {key} lacks a value: {text}")
        if name not in seen:
            problems.append(f"alert {name} has not been pending or firing")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prometheus")
    parser.add_argument("rules")
    parser.add_argument("dashboards", nargs="+")
    parser.add_argument("--deadline-s", type=float, default=120)
    parser.add_argument("--expect-alerts", default="")
    args = parser.parse_args()
    prometheus = Prometheus(args.prometheus)
    expressions = rule_expressions(args.rules)
    for path in args.dashboards:
        expressions.extend(dashboard_expressions(path))
    expected_alerts = [a for a in args.expect_alerts.split(",") if a]
    started = time.monotonic()
    deadline = started + args.deadline_s
    alerts = ["not checked yet"]
    alerts_seen = set()
    while True:
        names = prometheus.metric_names()
        health = loaded_rules(prometheus)
        for expression in expressions:
            if expression.done or expression.refused:
                continue
            try:
                check(prometheus, expression, names, health)
                if expression.done:
                    expression.passed_after_s = time.monotonic() - started
            except Refused as e:
                expression.problem = f"Prometheus refuses it: {e}"
                expression.refused = True
        alerts = alert_problems(prometheus, expected_alerts, alerts_seen)
        pending = [e for e in expressions if not e.done and not e.refused]
        refused = [e for e in expressions if e.refused]
        if refused or (not pending and not alerts) or time.monotonic() >= deadline:
            break
        time.sleep(POLL_INTERVAL_S)
    elapsed = time.monotonic() - started
    failed = [e for e in expressions if not e.done]
    kinds = {kind: sum(1 for e in expressions if e.kind == kind) for kind in ("panel", "rule", "variable")}
    count = (f"{len(expressions)} expressions ({kinds['panel']} panel queries, {kinds['rule']} alert rules, "
             f"{kinds['variable']} dashboard variables)")
    if not failed and not alerts:
        selector_count = sum(len(selectors(e.expr)) for e in expressions if e.kind != "variable")
        print(f"    {count} evaluated in {elapsed:.0f}s: all returned data, and their {selector_count} selectors "
              f"each match series")
        if expected_alerts:
            print(f"    seen pending or firing as expected, annotations rendered: {', '.join(expected_alerts)}")
        return 0
    why = "refused by Prometheus" if any(e.refused for e in failed) else f"after {elapsed:.0f}s"
    passed = [e.passed_after_s for e in expressions if e.done]
    others = f"; the {len(passed)} others returned data within {max(passed):.0f}s" if passed else ""
    print(f"error: {len(failed)} of {count} fail ({why}{others}):", file=sys.stderr)
    for expression in failed:
        print(f"  - {expression.where}\n      {expression.expr}\n      {expression.problem}", file=sys.stderr)
    for problem in alerts:
        print(f"  - {problem}", file=sys.stderr)
    absent = sorted({m.group(1) for e in failed for m in [re.search(r"exports (\w+)", e.problem)] if m})
    if absent:
        print(f"metrics no target exports: {', '.join(absent)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except OSError as e:  # urllib's URLError and timeouts: Prometheus is gone
        sys.exit(f"error: Prometheus does not answer: {e}")
