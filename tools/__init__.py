"""Developer tools for the DataStore Manager Pro tree (run as `python -m tools.<name>`)."""
