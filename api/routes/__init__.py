"""One module per resource; collected by api.main."""
