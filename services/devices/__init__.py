"""The device registry: ids, models and networks, ownership and visibility, and the cached
directory the hot paths read."""
