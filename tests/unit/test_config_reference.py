"""docs/configuration.md is the settings class as it is now: every ``HIVEPIPE_*`` variable with
its type, default and meaning (the ``#:`` comment above its field)."""

from __future__ import annotations

from services.entrypoints import config_reference
from services.platform.settings import Settings


def test_every_setting_has_a_meaning() -> None:
    entries = config_reference.entries()
    assert [e.variable for e in entries] == [f"HIVEPIPE_{n.upper()}" for n in Settings.model_fields]
    missing = [e.variable for e in entries if not e.meaning]
    assert not missing, (
        f"give these fields a #: comment in services/platform/settings.py: {missing}"
    )


def test_the_committed_reference_is_the_generated_one() -> None:
    committed = config_reference.OUTPUT.read_text(encoding="utf-8")
    assert committed == config_reference.render(), (
        "docs/configuration.md is out of date: run `make docs` "
        "(python -m services.entrypoints.config_reference)"
    )


def test_types_and_defaults_read_as_an_operator_writes_them() -> None:
    rows = {e.variable: e for e in config_reference.entries()}
    assert rows["HIVEPIPE_PARTITIONS"].type == "integer (>= 1, <= 256)"
    assert rows["HIVEPIPE_PARTITIONS"].default == "`4`"
    assert rows["HIVEPIPE_KAFKA"].default == "unset"
    assert rows["HIVEPIPE_DB_PREPARE"].default == "`true`"
    assert rows["HIVEPIPE_SIGFOX_ALLOWED_SOURCES"].type == "CIDRs, comma-separated"
    assert rows["HIVEPIPE_WEBHOOK_RETRY_SCHEDULE"].default.startswith("`5,30,120,")
    assert rows["HIVEPIPE_LOG_LEVEL"].type.startswith("one of `debug`")
    assert rows["HIVEPIPE_CALLBACK_TOKEN"].type == "secret"
    text = config_reference.render()
    assert "``" not in text  # reStructuredText literals became Markdown ones
