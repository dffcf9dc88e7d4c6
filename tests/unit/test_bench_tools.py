"""The benchmark's own tools: CPU per uplink from /proc, docs/benchmarks.md keeping the
dated sections of earlier runs, and the Node-RED flow of the baseline (its structure, and its
JavaScript decode and INSERT, run with node when there is one, against hivepipe's codec)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import Any

import pytest

from bench.__main__ import dated_sections
from bench.callbacks import BASE_TIME, callback_body, device_ids, frame
from bench.cpu import per_uplink_ms, tree_cpu
from bench.nodered import AFTER_COMMIT, AT_ONCE, FLOWS, NODERED_DIR, TABLE, expected_rows
from services.codecs.orbit_uplink import decode_orbit
from services.platform import UplinkEnvelope


def test_cpu_of_a_process_includes_its_children() -> None:
    before = tree_cpu(os.getpid())
    child = subprocess.Popen(  # a child that burns CPU until stopped
        [sys.executable, "-c", "while True: pass"]
    )
    try:
        for _ in range(200):
            if tree_cpu(os.getpid()) - before > 0.2:
                break
            subprocess.run(["sleep", "0.02"], check=True)
        assert tree_cpu(os.getpid()) - before > 0.2
    finally:
        child.kill()
        child.wait()


def test_per_uplink_figures_and_their_total() -> None:
    figures = per_uplink_ms({"api": 1.0, "worker": 2.0}, {"api": 1.5, "worker": 3.0}, 1000)
    assert figures == {"api": 0.5, "worker": 1.0, "total": 1.5}


def test_dated_sections_are_kept_and_the_generated_ones_are_not() -> None:
    doc = "\n".join(
        [
            "# Benchmarks",
            "| a | b |",
            "## 2026-12-06: one change",
            "kept 1",
            "## Scale-out (2026-12-06)",
            "kept 2",
            "## Reading the figures",
            "dropped",
        ]
    )
    assert dated_sections(doc) == [
        "## 2026-12-06: one change",
        "kept 1",
        "## Scale-out (2026-12-06)",
        "kept 2",
        "",
    ]


def _flow() -> dict[str, dict[str, Any]]:
    return {node["id"]: node for node in json.loads(FLOWS.read_text())}


def _wired_from(nodes: dict[str, dict[str, Any]], node_id: str) -> list[list[str]]:
    return nodes[node_id]["wires"]


def test_the_nodered_flow_is_the_issues() -> None:
    """HTTP-in (two paths) → decode → join (250 callbacks or 100 ms) → one multi-row INSERT …
    ON CONFLICT DO NOTHING; the answer at once, or from the INSERT node after it commits."""
    nodes = _flow()
    http_in = {n["url"]: n for n in nodes.values() if n["type"] == "http in"}
    assert set(http_in) == {AT_ONCE, AFTER_COMMIT}
    assert all(n["method"] == "post" and n["wires"] == [["decode"]] for n in http_in.values())
    answer, now, after_commit = _wired_from(nodes, "decode")
    assert nodes[answer[0]]["type"] == "http response"
    for join in (now[0], after_commit[0]):
        node = nodes[join]
        assert (node["type"], node["mode"], node["build"]) == ("join", "custom", "array")
        assert int(node["count"]) == 250
        assert float(node["timeout"]) == pytest.approx(0.1)
        assert node["wires"] == [["insert"]]
    insert = nodes["insert"]
    assert f"INSERT INTO {TABLE} (device, metric, time, value, unit) VALUES" in insert["func"]
    assert "ON CONFLICT DO NOTHING" in insert["func"]
    assert insert["func"].count(".query(") == 1  # one statement per batch
    assert nodes[insert["wires"][0][0]]["type"] == "http response"


def test_the_nodered_settings_have_no_editor_and_listen_on_loopback() -> None:
    settings = (NODERED_DIR / "settings.js").read_text()
    for line in ("httpAdminRoot: false", 'uiHost: "127.0.0.1"', "credentialSecret: false"):
        assert line in settings
    lock = json.loads((NODERED_DIR / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/node-red"]["version"] == "5.0.7"
    assert lock["packages"]["node_modules/pg"]["version"].startswith("8.")


def test_callback_bodies_move_each_device_on_by_10_minutes() -> None:
    ids = device_ids(3)
    assert [callback_body(ids, i)["device"] for i in range(4)] == [*ids, "B00000"]
    assert callback_body(ids, 3) == {
        "device": "B00000",
        "time": BASE_TIME + 600,
        "data": frame(3),
        "seqNumber": 1,
    }
    assert callback_body(ids, 0, seq_base=5)["seqNumber"] == 5


def test_expected_rows_count_the_samples_that_recur_once() -> None:
    ids = device_ids(1000)
    assert expected_rows(ids, 1000) == 4000  # one callback per device: 4 new samples each
    # 4 callbacks of one device, 10 minutes apart, 4 samples 15 minutes apart: the 4th repeats
    # the 1st's two newest samples.
    assert expected_rows(device_ids(1), 4) == 14
    assert expected_rows(ids, 20_000) == 46_000


#: Runs function nodes' code as Node-RED does (an async function of msg, env, flow, node,
#: context, global), one (code, msg) step after another with one flow context and a stand-in
#: pg Pool; prints what each returned, the queries and the responses held in the flow.
_HARNESS = r"""
const steps = JSON.parse(require("fs").readFileSync(0, "utf8"));
const AsyncFunction = (async () => {}).constructor;
const queries = [];
const pool = { query: async (sql, params) => { queries.push({ sql, params }); } };
const env = { get: (name) => ({ NODERED_CALLBACK_TOKEN: "tok" })[name] };
const waiting = new Map();
const flow = { get: () => waiting };
const context = { get: () => pool };
const node = { error: (err) => { throw err; } };
(async () => {
    const out = [];
    for (const [code, msg] of steps) {
        const run = new AsyncFunction("msg", "env", "flow", "node", "context", "global", code);
        out.push(await run(msg, env, flow, node, context, {}));
    }
    process.stdout.write(JSON.stringify({ out, queries, waiting: [...waiting.keys()] }));
})();
"""


def _run_functions(*steps: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """``steps``: (function node id, msg)."""
    node = shutil.which("node")
    if not node:
        pytest.skip("node is not installed")
    nodes = _flow()
    done = subprocess.run(
        [node, "-e", _HARNESS],
        input=json.dumps([[nodes[node_id]["func"], msg] for node_id, msg in steps]),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return json.loads(done.stdout)


def _callback(body: dict[str, Any], *, path: str = AT_ONCE, token: str = "tok") -> dict[str, Any]:
    return {
        "req": {"headers": {"x-callback-token": token}, "path": path},
        "res": {"response": body["seqNumber"]},
        "payload": body,
        "_msgid": f"m{body['seqNumber']}",
    }


def test_the_flows_decode_gives_hivepipes_points() -> None:
    ids = device_ids(7)
    bodies = [callback_body(ids, i) for i in range(0, 700, 37)]
    bodies.append({"device": "B00001", "time": BASE_TIME, "data": "0105ff38", "seqNumber": 1})
    result = _run_functions(*(("decode", _callback(b)) for b in bodies))
    for body, (answer, points, held) in zip(bodies, result["out"], strict=True):
        assert answer["statusCode"] == 204
        assert held is None
        envelope = UplinkEnvelope(
            source="sigfox",
            device=body["device"],
            received=float(body["time"]),
            payload_hex=body["data"],
        )
        expected = [
            [p.device, p.metric, p.time, p.value, p.unit] for p in decode_orbit(envelope).points
        ]
        assert points["payload"] == expected
    assert result["out"][-1][1]["payload"] == [["B00001", "temperature", BASE_TIME, -2.0, "°C"]]


def test_the_flows_decode_refuses_a_wrong_token_and_a_frame_it_cannot_read() -> None:
    body = callback_body(device_ids(1), 0)
    result = _run_functions(
        ("decode", _callback(body, token="wrong")),
        ("decode", _callback({**body, "data": "0201"})),
        ("decode", _callback({**body, "data": "0100aaaabbbb"})),  # 2 samples, no interval
    )
    statuses = [answer["statusCode"] for answer, *_ in result["out"]]
    assert statuses == [401, 400, 400]
    assert all(rest == [None, None] for _, *rest in result["out"])
    assert result["queries"] == []


def test_the_flows_insert_is_one_statement_per_batch() -> None:
    rows = [["B00000", "temperature", 1.7e9 - 60 * k, 20.5, "°C"] for k in range(3)]
    result = _run_functions(("insert", {"payload": [rows[:2], rows[2:]]}))
    assert result["out"] == [None]  # the callbacks were answered at once
    [query] = result["queries"]
    assert query["sql"] == (
        f"INSERT INTO {TABLE} (device, metric, time, value, unit) VALUES "
        "($1, $2, to_timestamp($3), $4, $5), ($6, $7, to_timestamp($8), $9, $10),"
        " ($11, $12, to_timestamp($13), $14, $15) ON CONFLICT DO NOTHING"
    )
    assert query["params"] == [v for row in rows for v in row]


def test_the_flow_answers_after_commit_once_its_insert_is_done() -> None:
    body = callback_body(device_ids(1), 0)
    rows = [["B00000", "temperature", 1.7e9, 20.5, "°C"]]
    joined = {"topic": "after-commit", "payload": [{"id": "m0", "rows": rows}]}
    result = _run_functions(("decode", _callback(body, path=AFTER_COMMIT)), ("insert", joined))
    held, answered = result["out"]
    assert held[:2] == [None, None]
    assert held[2]["payload"]["id"] == "m0"
    assert answered == [[{"res": {"response": 0}, "statusCode": 204, "payload": ""}]]
    assert result["waiting"] == []  # answered, no longer held
    assert [q["params"] for q in result["queries"]] == [rows[0]]
