"""Issue #20's pure rules: country codes, and who sees what inside fleets and places."""

from __future__ import annotations

import pytest

from services.accounts import Principal, country_code
from services.fleets import Stay, manages_account, only_visible, visible_stays


def _principal(user_id: int, account_id: int) -> Principal:
    return Principal(
        key_id=1,
        key_name="k",
        user_id=user_id,
        username=f"u{user_id}",
        is_integrator=user_id == account_id,
        account_id=account_id,
        scopes=frozenset({"readdev"}),
        expiration=None,
        revoked=False,
    )


def test_country_codes_are_iso_3166_alpha_2() -> None:
    assert country_code("fr") == "FR"
    assert country_code(" DE ") == "DE"
    for code in ("XX", "UK", "FRA", "", "F", "EU"):
        with pytest.raises(ValueError, match="ISO 3166-1 alpha-2"):
            country_code(code)


def test_only_the_visible_devices_in_the_given_order() -> None:
    visible = {"A": {"id": "A"}, "C": {"id": "C"}}
    assert only_visible({1: ["C", "B", "A"], 2: [], 3: ["B"]}, visible) == {
        1: [{"id": "C"}, {"id": "A"}],
        2: [],
        3: [],
    }


def test_a_place_history_for_the_account_and_for_its_users() -> None:
    owner, user = _principal(7, 7), _principal(8, 7)
    assert manages_account(owner)
    assert not manages_account(user)
    stays = [Stay("GONE", 1, 10.0, 20.0), Stay("MINE", 1, 5.0, None)]
    visible = {"MINE": {"id": "MINE"}}
    # The account's own user sees every stay, a deleted device's included; its user its own.
    assert visible_stays(stays, owner, visible) == stays
    assert visible_stays(stays, user, visible) == [stays[1]]
