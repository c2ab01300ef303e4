"""The alert rules and the dashboard under deploy/, held to Prometheus's own tools and to the
metrics the service really exports.

- promtool (Debian's ``prometheus`` package; `.ci/run` installs it) checks the rules and the
  dashboard's queries as PromQL, and runs the rules' unit tests (deploy/prometheus/
  alerts.test.yml: each alert fires on a synthetic failing deployment and stays silent on a
  healthy one). Without promtool these skip, except in CI (CI=true), where they fail: a green
  CI run always means the rules were tried.
- Every metric name the rules and the dashboard use is one ledger.services.metrics exports
  (tests/ops/test_metrics.py checks that each of those is in a real scrape), every alert the
  runbook expects exists with its annotations, and the dashboard shows every metric.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # PyYAML, which schemathesis (a test dependency) requires

from ledger.services.metrics import METRIC_NAMES
from ledger.testing.browser import in_ci
from ledger.testing.checkout import ROOT

RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "ledger.json"
PROMTOOL = "/usr/bin/promtool"

# The runbook's anchor (docs/runbook.md) of each alert the service is watched by.
RUNBOOK = {
    "LedgerImportFailureRate": "import-failures",
    "LedgerImportStuck": "stuck-import",
    "LedgerNoWorker": "no-worker",
    "LedgerCheckpointAge": "checkpoint-age",
    "LedgerVerificationFailed": "verification-failed",
    "LedgerQuarantineBacklog": "quarantine-backlog",
}

NAME = re.compile(r"\bledger_[a-z0-9_]+\b")
HISTOGRAMS = {"ledger_import_stage_seconds", "ledger_http_request_duration_seconds"}


def promtool() -> str:
    found = shutil.which("promtool") or (PROMTOOL if Path(PROMTOOL).is_file() else None)
    if found is None:
        if in_ci():
            pytest.fail("promtool is missing: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool is missing (apt-get install prometheus)")
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=60, cwd=RULES.parent)


def exported() -> set[str]:
    """Every series name the service exports, as PromQL writes them."""
    names = set(METRIC_NAMES)
    for histogram in HISTOGRAMS & names:
        names |= {f"{histogram}_bucket", f"{histogram}_sum", f"{histogram}_count"}
    return names


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    def walk(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["expr"]] if isinstance(node.get("expr"), str) else []
            return found + [e for v in node.values() for e in walk(v)]
        if isinstance(node, list):
            return [e for v in node for e in walk(v)]
        return []

    return walk(json.loads(DASHBOARD.read_text()))


def test_promtool_checks_the_rules() -> None:
    done = run("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(RUNBOOK)} rules found" in done.stdout


def test_promtool_unit_tests_pass() -> None:
    done = run("test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each panel's query parses (promtool checks it as a recording rule; Grafana's $job is a
    regex string to PromQL)."""
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    records = [{"record": f"ledger:dashboard_{i}", "expr": expr} for i, expr in enumerate(exprs)]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    done = run("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_its_runbook_and_annotations() -> None:
    found = {rule["alert"]: rule for rule in rules()}
    assert set(found) == set(RUNBOOK)
    for alert, anchor in RUNBOOK.items():
        annotations = found[alert]["annotations"]
        assert annotations["runbook_url"] == f"docs/runbook.md#{anchor}", alert
        assert annotations["summary"].strip() and annotations["description"].strip(), alert
        assert found[alert]["labels"]["severity"] in ("warning", "critical"), alert
    # Every alert is unit-tested.
    tested = {
        t["alertname"] for case in yaml.safe_load(RULE_TESTS.read_text())["tests"] for t in case["alert_rule_test"]
    }
    assert tested == set(RUNBOOK)


def test_rules_and_dashboard_use_only_exported_metrics() -> None:
    names = exported()
    in_rules = {n for rule in rules() for n in NAME.findall(rule["expr"])}
    in_dashboard = {n for expr in dashboard_exprs() for n in NAME.findall(expr)}
    assert in_rules - names == set(), "the rules use metrics the service does not export"
    assert in_dashboard - names == set(), "the dashboard uses metrics the service does not export"
    # The dashboard shows every metric (a histogram through its buckets, sum or count).
    shown = {n.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count") for n in in_dashboard}
    assert set(METRIC_NAMES) - shown == set()
