"""Pieces of the bulk jobs engine that stand on their own.

- ``budget``: the Open Cloud budget at the CCU the user sets, and how it is described.
- ``transform``: apply a jq program to an entry's value, safely.
- ``formats``: streaming export writers and validating import readers.
- ``session_locks``: recognise session-locking save wrappers (ProfileStore, ProfileService,
  Lapis) and edit only their data part.

The runner, the durable job state and the job routes build on these (issue 10).
"""
