"""The metrics the Grafana dashboard (``deploy/grafana/dashboards/hivepipe.json``) queries, and
the metric names a Prometheus registry or a ``/metrics`` page exports, suffixes included."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "hivepipe.json"

#: PromQL words that look like metric names: operators, modifiers, aggregations' clauses.
KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}
_IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
#: Suffixes a family's samples add to its name, by type.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
}


def dashboard_exprs(path: Path = DASHBOARD) -> list[str]:
    """Every PromQL expression of the dashboard's panels."""
    dashboard = json.loads(path.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects: identifiers that are not functions, keywords, label
    names (in ``{...}``, ``by (...)``, ``without (...)``), strings or durations."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"(?<![A-Za-z0-9_:])\d[\w.]*", "", text)  # numbers, offsets' durations
    names = set()
    for match in _IDENTIFIER.finditer(text):
        rest = text[match.end() :].lstrip()
        word = match.group()
        if rest.startswith("(") or word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def dashboard_metrics(path: Path = DASHBOARD) -> set[str]:
    return set().union(*(metric_names(expr) for expr in dashboard_exprs(path)))


def family_names(families: Iterable[object]) -> set[str]:
    """The sample names ``families`` (prometheus_client Metric objects) can export."""
    names: set[str] = set()
    for family in families:
        name, kind = family.name, family.type  # type: ignore[attr-defined]
        names.add(name)
        names.update(name + suffix for suffix in SUFFIXES.get(kind, ("",)))
        names.update(sample.name for sample in family.samples)  # type: ignore[attr-defined]
    return names


def scraped_names(metrics_text: str) -> set[str]:
    """The names a ``/metrics`` page exports (its HELP/TYPE lines list even the families with
    no sample yet)."""
    return family_names(text_string_to_metric_families(metrics_text))
