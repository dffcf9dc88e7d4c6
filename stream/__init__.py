"""The Faust stream processor: its app and agents (they only loop; logic lives in services/)."""
