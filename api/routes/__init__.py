"""One module per resource; collected by services.entrypoints.api_app."""
