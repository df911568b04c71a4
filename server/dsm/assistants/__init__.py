"""`dsm mcp`: a Model Context Protocol server for AI assistants (docs/assistants.md).

It is a client of the running companion server's API, with an assistant token of its own, so
every call passes the same guards, roles, caps, journal and event stream a person's does.
"""
