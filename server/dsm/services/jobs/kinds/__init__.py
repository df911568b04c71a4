"""The job kinds; importing this package registers each (one module per kind).

To add a kind, write a module here with a `JobKindHandler` subclass and `register(...)` it, and
import the module below (see docs/architecture.md, "How to add a job kind").
"""

from . import copy, delete, export, importing, rollback, set_metadata, transform

__all__ = ["copy", "delete", "export", "importing", "rollback", "set_metadata", "transform"]
