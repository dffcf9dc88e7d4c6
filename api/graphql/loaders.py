"""The request's batched loads (strawberry's :class:`DataLoader`): the fields that a query asks
for in one step of its execution load together, in one statement per kind, whatever the number
of fleets, places or devices; each load is also cached for the request. Tenancy is REST's: the
devices a principal sees come from :mod:`services.devices`' listing, once per request."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from strawberry.dataloader import DataLoader

from api.deps import Conn
from services.accounts import Principal, Profile
from services.accounts import profile as profiles
from services.fleets import fleet_store, only_visible, stays, visible_devices
from services.platform import DataPoint
from services.readings import points

Row = dict[str, Any]


class Loaders:
    """One per request, on the GraphQL context."""

    def __init__(self, conn: Conn, principal: Principal) -> None:
        self._conn = conn
        self._principal = principal
        #: Every device the principal may see, by id (the one key: None).
        self.visible: DataLoader[None, dict[str, Row]] = DataLoader(self._visible)
        self.profile: DataLoader[int, Profile] = DataLoader(self._profiles)
        #: The devices of a fleet the principal may see, by fleet id.
        self.fleet_devices: DataLoader[int, list[Row]] = DataLoader(self._fleet_devices)
        #: The devices at a place now that the principal may see, by place id.
        self.place_devices: DataLoader[int, list[Row]] = DataLoader(self._place_devices)
        #: The latest point of each metric, by device id.
        self.latest: DataLoader[str, list[DataPoint]] = DataLoader(self._latest)

    async def _visible(self, keys: Sequence[None]) -> list[dict[str, Row]]:
        rows = await visible_devices(self._conn, self._principal)
        return [rows for _ in keys]

    async def _profiles(self, account_ids: Sequence[int]) -> list[Profile]:
        # A principal has one account: one key, one statement.
        return [await profiles.get_profile(self._conn, account_id) for account_id in account_ids]

    async def _fleet_devices(self, fleet_ids: Sequence[int]) -> list[list[Row]]:
        members = await fleet_store.members(self._conn, fleet_ids)
        visible = only_visible(members, await self.visible.load(None))
        return [visible[fleet_id] for fleet_id in fleet_ids]

    async def _place_devices(self, place_ids: Sequence[int]) -> list[list[Row]]:
        present = await stays.present(self._conn, place_ids)
        visible = only_visible(present, await self.visible.load(None))
        return [visible[place_id] for place_id in place_ids]

    async def _latest(self, devices: Sequence[str]) -> list[list[DataPoint]]:
        found = await points.latest_points_of(self._conn, devices)
        return [found[device] for device in devices]
