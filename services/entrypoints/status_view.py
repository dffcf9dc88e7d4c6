"""``hivepipe status`` on a terminal: a :class:`~services.entrypoints.status.Status` as rich
tables, the processes of each role, then the pipeline's figures."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from services.entrypoints.process_table import ProcessTable
from services.entrypoints.status import Status

#: The order roles are listed in; embedded servers and unknown roles follow.
ROLE_ORDER = ("api", "worker", "mqtt", "postgres", "kafka", "mqtt-broker")
NOT_READ = "n/a"


def processes_table(table: ProcessTable | None) -> Table:
    """One row per process: its role, name, pid, restarts, and state."""
    out = Table(title="hivepipe up: processes", title_justify="left")
    for column in ("role", "process", "pid", "restarts", "state"):
        out.add_column(column, justify="right" if column in ("pid", "restarts") else "left")
    if table is None:
        return out
    rank = {role: n for n, role in enumerate(ROLE_ORDER)}
    rows = sorted(table.processes, key=lambda r: (rank.get(r.role, len(rank)), r.role))
    for row in rows:
        if not table.running:
            state = Text("unknown (hivepipe up stopped)", style="yellow")
        elif row.pid is None:
            state = Text("restarting", style="yellow")
        elif row.crash_looping:
            state = Text("crash-looping", style="bold red")
        else:
            state = Text("running", style="green")
        out.add_row(row.role, row.name, str(row.pid or "-"), str(row.restarts), state)
    return out


def _rate(value: float | None) -> str:
    return NOT_READ if value is None else f"{value:,.1f}"


def _count(value: int | None) -> str:
    return NOT_READ if value is None else f"{value:,}"


def pipeline_table(status: Status) -> Table:
    """The figures: rates, lag per topic, the webhook backlog, the dead letters."""
    out = Table(title="pipeline", title_justify="left")
    out.add_column("figure")
    out.add_column("value", justify="right")
    out.add_row("uplinks/s (last minute)", _rate(status.uplinks_per_second))
    out.add_row("points stored/s", _rate(status.points_per_second))
    if status.lag is None:
        out.add_row("consumer lag", NOT_READ)
    elif not status.lag:
        out.add_row("consumer lag", "no offsets committed yet")
    for topic, lag in sorted((status.lag or {}).items()):
        out.add_row(f"consumer lag: {topic}", _count(lag))
    backlog = status.webhook_backlog
    if backlog is None:
        out.add_row("webhook backlog", NOT_READ)
    else:
        oldest = f", oldest {backlog.oldest_seconds:,.0f} s" if backlog.points else ""
        out.add_row("webhook backlog", f"{backlog.points:,} points ({backlog.due:,} due{oldest})")
    out.add_row("dead letters (last hour)", _count(status.dead_letters_last_hour))
    return out


def render(status: Status) -> Group:
    """Both tables, then one line per source that could not be read."""
    parts: list[Table | Text] = [processes_table(status.processes), pipeline_table(status)]
    parts += [Text(f"! {problem}", style="yellow") for problem in status.problems]
    return Group(*parts)
