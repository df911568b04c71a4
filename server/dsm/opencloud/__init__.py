"""The one async Open Cloud client used by the whole server."""
