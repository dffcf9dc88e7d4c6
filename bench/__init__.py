"""``make bench``: throughput and latency of the pipeline against raw baselines, same run."""
