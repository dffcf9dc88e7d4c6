"""Scopes and presets of api-contract.md."""

from __future__ import annotations

from collections.abc import Iterable

SCOPES: tuple[str, ...] = (
    "readdata",
    "readdev",
    "writedev",
    "setdevwebhook",
    "readorbit",
    "writeorbit",
    "sendcmd",
    "readusage",
    "managekeys",
    "manageusers",
)
INTEGRATOR_ONLY: frozenset[str] = frozenset({"manageusers"})
READ_ONLY: tuple[str, ...] = ("readdata", "readdev", "readorbit")
READ_WRITE: tuple[str, ...] = (*READ_ONLY, "writedev", "writeorbit", "sendcmd")
PRESETS: tuple[str, ...] = ("read-only", "read-write", "admin")


class InvalidScopes(ValueError):
    """An unknown scope, or one the user may not hold."""


def allowed_scopes(*, is_integrator: bool) -> frozenset[str]:
    """Every scope a user of this kind may hold."""
    every = frozenset(SCOPES)
    return every if is_integrator else every - INTEGRATOR_ONLY


def expand_scopes(requested: Iterable[str], *, is_integrator: bool) -> tuple[str, ...]:
    """Expand presets (``read-only``, ``read-write``, ``admin``) and check the user may hold all.

    Returns the scopes sorted in table order; raises :class:`InvalidScopes` with the reason.
    """
    allowed = allowed_scopes(is_integrator=is_integrator)
    result: set[str] = set()
    for item in requested:
        if item == "admin":
            result |= allowed
        elif item == "read-only":
            result |= set(READ_ONLY)
        elif item == "read-write":
            result |= set(READ_WRITE)
        elif item in SCOPES:
            if item not in allowed:
                raise InvalidScopes(f"scope {item!r} is for integrators only")
            result.add(item)
        else:
            raise InvalidScopes(f"unknown scope or preset {item!r}")
    if not result:
        raise InvalidScopes("at least one scope is required")
    return tuple(scope for scope in SCOPES if scope in result)
