"""DataStore Manager Pro companion server."""

__version__ = "0.1.0"
