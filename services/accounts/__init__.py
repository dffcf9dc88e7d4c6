"""Users, integrators and their accounts: API keys and scopes, the keys' ``last_used``, and the
usage figures per user and day."""
