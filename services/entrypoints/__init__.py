"""Entrypoints: the ``hivepipe`` command line, the supervisor of ``hivepipe up``, the embedded
servers, and the composition root of the API process. Nothing imports this package."""
