"""Readings: the decode-and-store step of the stream (``pipeline``), and the stores of data points,
relay state and device events with their queries."""
