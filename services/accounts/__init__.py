"""Users, integrators and their accounts: API keys and scopes, the keys' ``last_used``, the
usage figures per user and day, the account's profile (name, contact, country), and the rate-limit
counters several API processes share (``rate_limits``)."""

from services.accounts import keys, profile, usage, users
from services.accounts.admin import admin_key
from services.accounts.countries import country_code
from services.accounts.keys import (
    Principal,
    create_user,
    find_principal,
    generate_key,
    hash_key,
    store_key,
)
from services.accounts.last_used import LastUsed
from services.accounts.profile import Profile
from services.accounts.rate_counters import PostgresStorage, uses_own_database
from services.accounts.scopes import PRESETS, SCOPES, InvalidScopes, expand_scopes
from services.accounts.users import USERNAME

__all__ = [
    "InvalidScopes",
    "LastUsed",
    "PRESETS",
    "PostgresStorage",
    "Principal",
    "Profile",
    "SCOPES",
    "USERNAME",
    "admin_key",
    "country_code",
    "create_user",
    "expand_scopes",
    "find_principal",
    "generate_key",
    "hash_key",
    "keys",
    "profile",
    "store_key",
    "usage",
    "users",
    "uses_own_database",
]
