"""Users, integrators and their accounts: API keys and scopes, the keys' ``last_used``, and the
usage figures per user and day."""

from services.accounts import keys, usage, users
from services.accounts.admin import admin_key
from services.accounts.keys import (
    Principal,
    create_user,
    find_principal,
    generate_key,
    hash_key,
    store_key,
)
from services.accounts.last_used import LastUsed
from services.accounts.scopes import PRESETS, SCOPES, InvalidScopes, expand_scopes
from services.accounts.users import USERNAME

__all__ = [
    "InvalidScopes",
    "LastUsed",
    "PRESETS",
    "Principal",
    "SCOPES",
    "USERNAME",
    "admin_key",
    "create_user",
    "expand_scopes",
    "find_principal",
    "generate_key",
    "hash_key",
    "keys",
    "store_key",
    "usage",
    "users",
]
