"""The plugin <-> server protocol: pydantic models are the one source for both sides.

`tools/codegen.py` turns these models into JSON Schema and the Luau types and validators the
plugin uses; CI fails when the generated files are stale.
"""

PROTOCOL_MAJOR = 1
PROTOCOL_MINOR = 0
