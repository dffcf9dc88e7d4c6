"""``hivepipe users|keys|accounts`` on a real database, by URL or through ``urls.json``."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.accounts.keys import find_principal
from services.accounts.users import get_user
from services.entrypoints.cli import app
from services.entrypoints.installation import write_urls
from tests.api_support import connect

runner = CliRunner()


def _run(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


async def _principal(url: str, key: str) -> object:
    async with await connect(url) as conn:
        return await find_principal(conn, key)


async def _user(url: str, name: str) -> dict[str, object] | None:
    async with await connect(url) as conn:
        return await get_user(conn, name)


def test_users_keys_and_limits(migrated_url: str, tmp_path: Path) -> None:
    env = {"HIVEPIPE_DATABASE_URL": migrated_url, "HIVEPIPE_DATA_DIR": str(tmp_path)}
    assert _run(env, "users", "create", "acme", "--integrator")[:2] == (
        0,
        "created integrator acme\n",
    )
    assert _run(env, "users", "create", "alice", "--parent", "acme")[1] == (
        "created user of acme alice\n"
    )
    code, _, err = _run(env, "users", "create", "bob", "--parent", "alice")
    assert code == 1
    assert "not an integrator" in err
    code, _, err = _run(env, "users", "create", "alice")
    assert (code, "taken" in err) == (1, True)

    code, out, err = _run(
        env, "keys", "create", "--user", "alice", "--scopes", "read-only", "--name", "ro"
    )
    assert code == 0, err
    key = out.strip()
    assert len(key) == 64
    assert key.isalnum()
    assert "shown once" in err
    assert key not in err
    principal = asyncio.run(_principal(migrated_url, key))
    assert principal is not None
    assert principal.scopes == frozenset({"readdata", "readdev", "readorbit"})  # type: ignore[attr-defined]
    assert principal.account_id != principal.user_id  # type: ignore[attr-defined]

    code, _, err = _run(env, "keys", "create", "--user", "alice", "--scopes", "manageusers")
    assert code == 1
    assert "integrators only" in err
    code, out, err = _run(
        env, "keys", "create", "--user", "acme", "--scopes", "admin,readusage", "--expires", "30d"
    )
    assert code == 0, err
    assert "manageusers" in err

    code, out, _ = _run(env, "keys", "list", "--user", "alice")
    assert code == 0
    assert out.startswith(f"alice\tro\t{key[:6]}")
    assert key not in out

    assert _run(env, "keys", "revoke", "ro", "--user", "alice")[0] == 0
    revoked = asyncio.run(_principal(migrated_url, key))
    assert revoked is not None
    assert revoked.revoked  # type: ignore[attr-defined]
    assert _run(env, "keys", "revoke", "nope", "--user", "alice")[0] == 1

    code, out, _ = _run(
        env, "accounts", "limits", "acme", "--per-minute", "600", "--per-day", "50000"
    )
    assert (code, out) == (0, "acme: 600/minute, 50000/day\n")
    row = asyncio.run(_user(migrated_url, "acme"))
    assert row is not None
    assert (row["rate_per_minute"], row["rate_per_day"]) == (600, 50000)
    code, _, err = _run(env, "accounts", "limits", "alice", "--per-minute", "5")
    assert code == 1
    assert "account of 'acme'" in err
    assert _run(env, "accounts", "limits", "acme")[0] == 1


def test_the_running_installation_is_found_through_urls_json(
    migrated_url: str, tmp_path: Path
) -> None:
    env = {"HIVEPIPE_DATABASE_URL": "", "HIVEPIPE_DATA_DIR": str(tmp_path)}
    code, _, err = _run(env, "users", "list")
    assert code == 1
    assert "hivepipe up" in err
    path = write_urls(tmp_path, {"database_url": migrated_url, "kafka": None})
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert json.loads(path.read_text())["database_url"] == migrated_url
    assert _run(env, "users", "create", "viaurls")[0] == 0
    code, out, _ = _run(env, "users", "list")
    assert (code, out) == (0, "viaurls\tuser\n")


def test_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    env = {"HIVEPIPE_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none"}
    code, out, err = _run(env, "users", "list")
    assert code == 1
    assert out == ""
    assert err.startswith("error: cannot reach the database")
    assert "Traceback" not in err


@pytest.mark.parametrize("command", [["users"], ["keys"], ["accounts"]])
def test_help(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0


def test_topics_tail_prints_a_topic_by_its_short_name(kafka_server: str, tmp_path: Path) -> None:
    from aiokafka import AIOKafkaProducer

    prefix = f"t{uuid.uuid4().hex[:8]}."

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_server, acks="all")
        await producer.start()
        try:
            for i in range(3):
                await producer.send_and_wait(f"{prefix}readings", b'{"n": %d}' % i, key=b"DEV")
        finally:
            await producer.stop()

    asyncio.run(produce())
    # The broker from urls.json, as `hivepipe up` leaves it; the prefix from the environment.
    write_urls(tmp_path, {"kafka": kafka_server})
    env = {"HIVEPIPE_DATA_DIR": str(tmp_path), "HIVEPIPE_TOPIC_PREFIX": prefix}
    code, out, err = _run(env, "topics", "tail", "readings", "--count", "3")
    assert code == 0, err
    assert out.splitlines() == [f'DEV\t{{"n": {i}}}' for i in range(3)]
    code, out, err = _run(env, "topics", "tail", "readings", "--no-follow")
    assert (code, len(out.splitlines())) == (0, 3)  # stops once nothing more comes
    code, _, err = _run({"HIVEPIPE_DATA_DIR": str(tmp_path / "none")}, "topics", "tail", "x")
    assert code == 1
    assert "no Kafka" in err
