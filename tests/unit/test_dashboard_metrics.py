"""The Grafana dashboard queries only metrics the code exports (issue #18), and its Prometheus
and Grafana provisioning files hold together. ``tests/e2e/test_status_e2e.py`` checks the same
against the /metrics of the processes of a running ``hivepipe up``."""

from __future__ import annotations

import importlib
import json

import pytest
import yaml
from prometheus_client import REGISTRY

from tests.dashboard import (
    DASHBOARD,
    ROOT,
    dashboard_exprs,
    dashboard_metrics,
    family_names,
    metric_names,
)

#: The composition roots of every process: importing them registers every metric they export.
PROCESS_MODULES = (
    "services.entrypoints.api_app",  # the API (and the callbacks)
    "stream.worker",  # a worker
    "ingest.mqtt",  # an MQTT adapter
    "services.entrypoints.supervisor",  # hivepipe up
)

#: The panels an operator needs (issue #18), by a word of their title.
REQUIRED_PANELS = (
    "uplinks/s by source",
    "points stored/s",
    "consumer lag",
    "callback latency",
    "downlink answer latency",
    "webhook deliveries and failures",
    "dead letters",
    "role restarts",
    "gc pauses",
)


def exported() -> set[str]:
    for module in PROCESS_MODULES:
        importlib.import_module(module)
    return family_names(REGISTRY.collect())


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            "sum by (source) (rate(hivepipe_uplinks_received_total[1m]))",
            {"hivepipe_uplinks_received_total"},
        ),
        (
            'histogram_quantile(0.99, sum by (le, job) (rate(x_bucket{job=~"a|b"}[5m])))',
            {"x_bucket"},
        ),
        ("sum(rate(a_total[5m])) / on (job) group_left b + 2 * c offset 5m", {"a_total", "b", "c"}),
    ],
)
def test_metric_names_are_read_from_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_every_metric_the_dashboard_queries_is_exported() -> None:
    queried = dashboard_metrics()
    assert len(queried) >= 15
    missing = queried - exported()
    assert not missing, f"the dashboard queries metrics no process exports: {sorted(missing)}"


def test_the_dashboard_has_the_panels_an_operator_needs() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    titles = [panel["title"].lower() for panel in dashboard["panels"]]
    for wanted in REQUIRED_PANELS:
        assert any(wanted in title for title in titles), f"no panel for {wanted!r}: {titles}"
    assert all(expr.strip() for expr in dashboard_exprs())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_grafana_provisions_the_prometheus_datasource_and_the_dashboard() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    uids = {source["uid"] for source in sources["datasources"]}
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] in uids, panel["title"]
    providers = yaml.safe_load((provisioning / "dashboards" / "hivepipe.yml").read_text())
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    path = providers["providers"][0]["options"]["path"]
    assert f"./grafana/dashboards:{path}:ro" in mounts
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in mounts


def test_prometheus_scrapes_every_role_where_it_serves_its_metrics() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    env = compose["x-hivepipe"]["environment"]
    targets = {
        job["job_name"]: (sd["names"][0], sd["port"])
        for job in config["scrape_configs"]
        for sd in job.get("dns_sd_configs", [])
    }
    assert targets == {
        "api": ("api", 8080),
        "worker": ("worker", int(env["HIVEPIPE_WORKER_METRICS_PORT"])),
        "mqtt": ("ingest-mqtt", int(env["HIVEPIPE_MQTT_METRICS_PORT"])),
    }
    assert all(name in compose["services"] for name, _ in targets.values())
