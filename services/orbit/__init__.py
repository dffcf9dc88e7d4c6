"""Orbit device management: parameters, the pending-update queue, downlink planning."""
