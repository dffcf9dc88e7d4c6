"""Real callback bodies that lack a field the networks usually send (issue #19): a Sigfox
template without ``seqNumber``, a TTS uplink without ``session_key_id``, a TTS downlink report
without ``dev_eui``; and what of a refused callback may be kept (no credentials). No I/O."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from ingest.http.redaction import redact_query, redact_text
from services.devices import ids
from services.uplinks.sigfox import SigfoxCallback
from services.uplinks.ttn import TtnDownlinkReport, TtnUplink
from tests.samples import sample

# -- Sigfox without seqNumber --------------------------------------------------------------------


def test_a_sigfox_callback_without_seq_number_is_deduplicated_on_device_time_and_data() -> None:
    body = {"device": "1a2b3c", "time": 1700000000, "data": "010F08FC0906"}
    callback = SigfoxCallback.model_validate(body)
    assert callback.seq_number is None
    assert callback.dedup_key == "sigfox:1A2B3C:at:1700000000:010f08fc0906"
    assert callback.envelope().meta == {}  # no seq: nothing to make up
    # Another frame at the same second, or the same frame later, is another uplink.
    other = SigfoxCallback.model_validate({**body, "data": "010f08fc0907"})
    later = SigfoxCallback.model_validate({**body, "time": 1700000001})
    assert len({callback.dedup_key, other.dedup_key, later.dedup_key}) == 3
    # With a seqNumber nothing changes.
    numbered = SigfoxCallback.model_validate({**body, "seqNumber": 7})
    assert numbered.dedup_key == "sigfox:1A2B3C:7"


# -- TTS uplinks without session_key_id ----------------------------------------------------------


def _ttn(*, session: str | None, dev_addr: str | None, f_cnt: int = 0) -> TtnUplink:
    body = sample("ttn-uplink.json")
    body["uplink_message"]["f_cnt"] = f_cnt
    if session is None:
        del body["uplink_message"]["session_key_id"]
    else:
        body["uplink_message"]["session_key_id"] = session
    if dev_addr is None:
        del body["end_device_ids"]["dev_addr"]
    else:
        body["end_device_ids"]["dev_addr"] = dev_addr
    return TtnUplink.model_validate(body)


def test_a_ttn_uplink_without_session_key_id_falls_back_to_the_dev_addr() -> None:
    before = _ttn(session=None, dev_addr="260b1234")
    rejoined = _ttn(session=None, dev_addr="260B9999")  # a rejoin: new DevAddr, f_cnt 0 again
    assert before.dedup_key == "lorawan:70B3D57ED0000001:dev_addr=260B1234:0"
    assert rejoined.dedup_key != before.dedup_key
    # The session key id, when there is one, decides (as before).
    assert _ttn(session="AYvZ", dev_addr="260B1234").dedup_key == "lorawan:70B3D57ED0000001:AYvZ:0"
    # Nothing that changes with the session: the frame counter alone.
    assert _ttn(session=None, dev_addr=None, f_cnt=5).dedup_key == "lorawan:70B3D57ED0000001::5"


# -- TTS downlink reports without dev_eui --------------------------------------------------------

_FAILED: dict[str, Any] = {
    "end_device_ids": {"device_id": "abp-node-7", "application_ids": {"application_id": "app"}},
    "received_at": "2023-11-14T22:20:00Z",
    "downlink_failed": {"error": {"namespace": "pkg/networkserver", "name": "device_not_found"}},
}


def test_a_ttn_downlink_report_without_dev_eui_is_a_valid_message_without_a_device() -> None:
    report = TtnDownlinkReport.model_validate(copy.deepcopy(_FAILED))
    assert report.end_device_ids.dev_eui is None
    assert report.missing_device == "missing_dev_eui"
    with_eui = copy.deepcopy(_FAILED)
    with_eui["end_device_ids"]["dev_eui"] = "70b3d57ed0000001"
    report = TtnDownlinkReport.model_validate(with_eui)
    assert report.missing_device is None
    assert report.device_event("downlink_failed").device == "70B3D57ED0000001"


@pytest.mark.parametrize(
    "body",
    [
        {"downlink_failed": {}},  # no end_device_ids: not a TTS message
        {"end_device_ids": {"dev_eui": "70B3D57ED0000001"}, "downlink_ack": {}},  # no device_id
        {**_FAILED, "downlink_failed": "failed"},
    ],
)
def test_what_is_not_a_tts_downlink_report_is_still_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        TtnDownlinkReport.model_validate(body)


# -- Device ids ------------------------------------------------------------------------------------


@pytest.mark.parametrize("device_id", [".", "..", "...", "...."])
def test_an_id_made_only_of_dots_is_refused_naming_the_rule(device_id: str) -> None:
    with pytest.raises(ids.InvalidDevice, match="only of dots"):
        ids.validate_new_device(device_id, "json")


def test_ids_with_dots_and_other_characters_are_accepted() -> None:
    for device_id in ("a.b", ".a", "..1", "relay-1."):
        assert ids.validate_new_device(device_id, "json") == (device_id, "mqtt")


# -- What a refused callback may keep -------------------------------------------------------------


def test_credential_parameters_are_redacted_from_a_query() -> None:
    query = (
        "event=up&token=s3cret-token-123456&apikey=k1&API_KEY=k2&key=k3&secret=k4&password=k5"
        "&access_token=k6&X-Callback-Token=k7&client_secret=k8&auth=k9&x=1&monkey=ok"
    )
    kept = redact_query(query, secrets=("s3cret-token-123456",))
    assert not any(f"k{n}" in kept for n in range(1, 10))
    assert "s3cret" not in kept
    assert kept.startswith("event=up&token=redacted&apikey=redacted&API_KEY=redacted")
    assert kept.endswith("&x=1&monkey=ok")  # other parameters stay as they came


def test_the_token_is_redacted_wherever_it_appears() -> None:
    token = "s3cret-token-123456"
    # A parameter of any name whose value holds the token (percent-encoded or not) is redacted.
    assert redact_query(f"event=up&next=a{token}b", secrets=(token,)) == "event=up&next=redacted"
    assert redact_query("a=%73%33cret-token-123456&b", secrets=(token,)) == "a=redacted&b"
    assert redact_query(f"{token}&x=1", secrets=(token,)) == "redacted&x=1"
    assert redact_text(f'{{"note": "{token}"', secrets=(token,)) == '{"note": "redacted"'
    assert redact_text("nothing here", secrets=("",)) == "nothing here"
