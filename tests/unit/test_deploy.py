"""``deploy/``: the Compose file is valid against the Compose specification's JSON Schema
(``tests/data/compose-spec.json``, vendored from compose-spec/compose-go) and runs several
replicas of each role on a real Kafka of 3+ partitions and TimescaleDB; the image build stays
multi-stage, uv-based and non-root. No Docker engine runs here: these are the checks we can
make without one."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from services.platform import ALL_TOPICS, Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"
#: The hivepipe roles and the command each service of them runs.
ROLES = {
    "api": ["hivepipe", "api"],
    "worker": ["hivepipe", "worker"],
    "ingest-mqtt": ["hivepipe", "ingest", "mqtt"],
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def test_compose_file_is_valid_against_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_the_schema_catches_a_wrong_compose_file(compose: dict[str, Any]) -> None:
    """The vendored schema is not a permissive stub: a typo in a service is refused."""
    schema = json.loads(SCHEMA.read_text())
    wrong = {**compose, "services": {**compose["services"], "api": {"imagee": "x"}}}
    assert list(jsonschema.Draft7Validator(schema).iter_errors(wrong))


def test_every_role_runs_several_replicas(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, command in ROLES.items():
        service = services[name]
        assert service["command"] == command
        assert int(service["deploy"]["replicas"]) >= 2, name
        assert "build" in service
        assert service["image"].startswith("hivepipe")
    env = compose["x-hivepipe"]["environment"]
    assert int(services["worker"]["deploy"]["replicas"]) <= int(env["HIVEPIPE_PARTITIONS"])


def test_kafka_topics_have_at_least_three_partitions(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert int(services["kafka"]["environment"]["KAFKA_NUM_PARTITIONS"]) >= 3
    env = compose["x-hivepipe"]["environment"]
    assert int(env["HIVEPIPE_PARTITIONS"]) >= 3
    script = " ".join(services["kafka-topics"]["command"])
    loop = re.search(r"for topic in ([\w\s-]+?); do", script)
    assert loop is not None, script
    assert set(loop.group(1).split()) == set(ALL_TOPICS)
    assert f"--topic {Settings.model_fields['topic_prefix'].default}$$topic" in script
    partitions = re.search(r"--partitions (\d+)", script)
    assert partitions is not None
    assert int(partitions.group(1)) >= 3
    for role in ROLES:
        condition = services[role]["depends_on"]["kafka-topics"]["condition"]
        assert condition == "service_completed_successfully"


def test_the_database_is_timescaledb(compose: dict[str, Any]) -> None:
    db = compose["services"]["timescaledb"]
    assert db["image"].startswith("timescale/timescaledb:")
    url = compose["x-hivepipe"]["environment"]["HIVEPIPE_DATABASE_URL"]
    assert url.startswith("postgresql://")
    assert "@timescaledb:5432/" in url


def test_services_reference_what_exists(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        if "build" in service:
            context = (DEPLOY / service["build"]["context"]).resolve()
            assert (context / service["build"]["dockerfile"]).is_file(), name
        depends = service.get("depends_on", [])
        assert set(depends) <= set(services), name
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source}"
            else:
                assert source in compose["volumes"], f"{name}: {source}"


def test_long_running_services_have_healthchecks(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if service.get("restart") == "no":
            continue  # a one-shot job (the topics)
        assert service.get("healthcheck", {}).get("test"), name


def test_environment_names_are_real_settings(compose: dict[str, Any]) -> None:
    settings = {f"HIVEPIPE_{name.upper()}" for name in Settings.model_fields}
    for name, service in compose["services"].items():
        for key in service.get("environment", {}):
            if key.startswith("HIVEPIPE_"):
                assert key in settings, f"{name}: {key} is not a setting"


def test_dockerfile_is_multi_stage_uv_and_non_root() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    ]
    stages = [n for n, line in enumerate(lines) if line.startswith("FROM ")]
    assert len(stages) >= 2, "multi-stage"
    build, final = lines[stages[0] : stages[-1]], lines[stages[-1] :]
    assert any("uv sync --frozen" in line for line in build)
    assert any(line.startswith("COPY --from=build /app/.venv") for line in final)
    assert not any("uv" in line.split() for line in final), "the runtime image has no uv"
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users, "a USER in the runtime stage"
    assert users[-1] not in ("root", "0"), "runs as a non-root user"
    assert final[-1].startswith('CMD ["hivepipe"')
    for line in build:
        if line.startswith("COPY ") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source
    assert len(text.splitlines()) <= 40, "simple enough to read"
