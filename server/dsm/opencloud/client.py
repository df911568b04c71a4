"""The async Open Cloud client: ``async with OpenCloudClient(api_key=..., base_url=...)``.

The client is assembled from one module per API family (client_standard, client_v1,
client_ordered, client_memory); transport.py holds the session, pacing, retries and lost-answer
handling. Everything a caller needs is importable from this module.
"""

from __future__ import annotations

from .client_memory import MemoryStoreMethods
from .client_ordered import OrderedMethods
from .client_standard import StandardMethods
from .client_v1 import V1Methods
from .errors import (
    AlreadyExists,
    ChecksumMismatch,
    Conflict,
    InvalidArgument,
    NetworkError,
    NotFound,
    OpenCloudError,
    PermissionDenied,
    RateLimited,
    ServerError,
    Unauthorized,
    WriteOutcomeUnknown,
)
from .models import (
    CARRY_OVER,
    CarryOver,
    DataStore,
    DataStoreEntry,
    EntryRevision,
    FlushOperation,
    ListedEntry,
    OrderedDataStoreEntry,
    Page,
    QueueItem,
    QueueReadResult,
    SnapshotResult,
    SortedMapItem,
    V1Entry,
    V1EntryVersion,
)
from .retry import RetryPolicy
from .transport import (
    EMULATOR_HEADER,
    ROBLOX_BASE_URL,
    OnCall,
    RateLimiterLike,
)

__all__ = [
    "CARRY_OVER",
    "EMULATOR_HEADER",
    "ROBLOX_BASE_URL",
    "AlreadyExists",
    "CarryOver",
    "ChecksumMismatch",
    "Conflict",
    "DataStore",
    "DataStoreEntry",
    "EntryRevision",
    "FlushOperation",
    "InvalidArgument",
    "ListedEntry",
    "NetworkError",
    "NotFound",
    "OnCall",
    "OpenCloudClient",
    "OpenCloudError",
    "OrderedDataStoreEntry",
    "Page",
    "PermissionDenied",
    "QueueItem",
    "QueueReadResult",
    "RateLimited",
    "RateLimiterLike",
    "RetryPolicy",
    "ServerError",
    "SnapshotResult",
    "SortedMapItem",
    "Unauthorized",
    "V1Entry",
    "V1EntryVersion",
    "WriteOutcomeUnknown",
]


class OpenCloudClient(StandardMethods, V1Methods, OrderedMethods, MemoryStoreMethods):
    """Typed async client for Roblox Open Cloud (or the local emulator at another base_url).

    Keyword arguments: api_key (str or SecretStr; never shown in repr, logs or errors),
    base_url (default https://apis.roblox.com), limiter (ClientRateLimiter), retry
    (RetryPolicy), timeout (aiohttp.ClientTimeout), on_call(operation, status, latency_s,
    backend), session (share an aiohttp.ClientSession; the client then does not close it).
    """
