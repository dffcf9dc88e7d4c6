"""Ingest: turning what networks and devices send into one raw envelope on ``uplinks``."""
