"""Every protocol model and route in one place: the server's OpenAPI, its route tests, the
schema hash in `/hello` and the generated Luau all read from here.

Server use::

    from shared_schema.registry import ROUTES, openapi_document, schema_hash
    hello = Hello(..., schema_hash=schema_hash())        # computed once, cached
    doc = openapi_document(server_version=dsm.__version__)  # served at GET /api/v1/openapi.json
    for route in ROUTES: ...  # route.method, route.full_path, route.role, route.query, route.body
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, StringConstraints, TypeAdapter
from pydantic.json_schema import models_json_schema

from . import PROTOCOL_MAJOR, PROTOCOL_MINOR
from .analytics import (
    AnalyticsScope,
    AnomaliesRequest,
    Anomaly,
    AnomalyCount,
    AnomalyReport,
    CurrencyReport,
    Distribution,
    DistributionRequest,
    EconomyReport,
    EconomyRequest,
    HistogramBin,
    Percentiles,
    Progression,
    ProgressionRequest,
    ProgressPoint,
    ProgressSample,
    ProgressSeries,
    RankedEntry,
    SchemaDrift,
    SchemaField,
    SchemaReport,
    StoreSchema,
    SupplyPoint,
    TypeShare,
    ValueCount,
)
from .auth import (
    AssistantCapsUsage,
    CapUse,
    PairCompleteRequest,
    PairCompleteResponse,
    PairStartRequest,
    PairStartResponse,
    TokenInfo,
    TokenList,
)
from .backups import (
    BACKUP_MODELS,
    ArchiveId,
    ArchiveKeyRequest,
    BackupCreateRequest,
    BackupDiff,
    BackupDiffRequest,
    BackupList,
    BackupScheduleList,
    BackupScheduleRequest,
    BackupScheduleView,
    BackupSummary,
    BackupVerifyReport,
    BackupView,
    ErasureCreateRequest,
    ErasurePatternsRequest,
    ErasurePatternsView,
    ErasureReportView,
    ErasureView,
    RestoreCreateRequest,
    RestorePlanPage,
    RestorePlanQuery,
    ScheduleName,
)
from .common import Role, Source
from .constraints import Name, NonNegativeInt, PositiveInt
from .data import (
    DataStoreInfo,
    DataStoreListQuery,
    DataStorePage,
    KeyItem,
    KeyListQuery,
    KeyPage,
    ScopeList,
    UniverseInfo,
    UniverseList,
)
from .entries import (
    DeleteResult,
    EntryAtQuery,
    EntryCreateRequest,
    EntryDeleteQuery,
    EntryDiff,
    EntryDiffQuery,
    EntryQuery,
    EntryUpdateRequest,
    EntryView,
    IncrementRequest,
    JsonPatchOperation,
    RevertRequest,
    RevisionInfo,
    RevisionListQuery,
    RevisionPage,
)
from .errors import ErrorBody, ErrorEnvelope
from .events import (
    EVENT_PAYLOADS,
    BackendChangedPayload,
    DataStoreChangedPayload,
    EntryChangedPayload,
    Event,
    EventBatch,
    EventResync,
    EventsQuery,
    SessionJoinedPayload,
    SessionLeftPayload,
    ThrottleChangedPayload,
)
from .hello import Hello
from .identity import Person
from .index import (
    Coverage,
    IndexBasis,
    IndexDropResult,
    IndexStatus,
    IndexStatusQuery,
    SampleGameLoading,
    SampleGameRequest,
    SampleGameStatus,
    StoreCoverage,
)
from .jobs import (
    BadLineView,
    BudgetCategoryView,
    BudgetSetRequest,
    BudgetView,
    CopyParams,
    CopyTarget,
    CrawlHistoryParams,
    CrawlParams,
    DeleteParams,
    ExportParams,
    ImportParams,
    JobCreateRequest,
    JobEstimate,
    JobFailure,
    JobId,
    JobItemPage,
    JobItemQuery,
    JobItemView,
    JobListQuery,
    JobPage,
    JobPlan,
    JobProgress,
    JobProgressPayload,
    JobPruneEntry,
    JobPruneKept,
    JobPruneReport,
    JobPruneRequest,
    JobRollbackRequest,
    JobSample,
    JobStartRequest,
    JobStatePayload,
    JobSummary,
    JobView,
    PreJobBackup,
    SampleImage,
    SelectedKey,
    Selection,
    SetMetadataParams,
    TransformParams,
    UploadChunkRequest,
    UploadCreateRequest,
    UploadId,
    UploadInfo,
)
from .journal import JournalItem, JournalPage, JournalQuery, UndoRequest
from .memory import (
    QueueItemView,
    QueuePeek,
    QueuePeekQuery,
    SortedMapItem,
    SortedMapItemView,
    SortedMapListQuery,
    SortedMapPage,
)
from .metrics import MetricSample, MetricsSummary
from .monitor import (
    BudgetUse,
    Feature,
    FeatureList,
    MonitorTickPayload,
    OperationTotal,
    TrafficBucket,
    TrafficQuery,
    TrafficSeries,
)
from .ordered import (
    IdempotencyQuery,
    OrderedCreateRequest,
    OrderedEntry,
    OrderedEntryId,
    OrderedEntryView,
    OrderedIncrementRequest,
    OrderedListQuery,
    OrderedPage,
    OrderedUpdateRequest,
)
from .search import (
    EntryFilter,
    EntryLink,
    LiveCheck,
    QueryCheck,
    QueryCheckRequest,
    QueryError,
    SearchFilter,
    SearchHit,
    SearchPage,
    SearchRequest,
)
from .sessions import SessionInfo, SessionList, SessionOpened, SessionOpenRequest
from .team import (
    ActivityItem,
    ActivityPage,
    ActivityQuery,
    AuditHead,
    AuditProblem,
    AuditVerifyReport,
    Bookmark,
    BookmarkRequest,
    EntryRef,
    KeyNote,
    LockAnswer,
    LockQuery,
    LockRequest,
    NoteRequest,
    SessionViewingRequest,
    TeamActivityPayload,
    TeamCaps,
    TeamEnableRequest,
    TeamInvite,
    TeamInviteRequest,
    TeamJoinRequest,
    TeamLock,
    Teammate,
    TeamMember,
    TeamNames,
    TeamOverview,
    TeamPresencePayload,
    TeamStatus,
    Workspace,
)

API_PREFIX = "/api/v1"
SCHEMA_TITLE = "DataStore Manager Pro plugin protocol"

Method = Literal["GET", "POST", "PUT", "DELETE"]

# Every message model, in the order the generated files list them.
MODELS: tuple[type[BaseModel], ...] = (
    ErrorEnvelope,
    ErrorBody,
    Source,
    Hello,
    PairStartRequest,
    PairStartResponse,
    PairCompleteRequest,
    PairCompleteResponse,
    CapUse,
    AssistantCapsUsage,
    TokenInfo,
    TokenList,
    Person,
    EntryRef,
    SessionOpenRequest,
    SessionInfo,
    SessionOpened,
    SessionList,
    SessionViewingRequest,
    EventsQuery,
    Event,
    EventBatch,
    EventResync,
    EntryChangedPayload,
    DataStoreChangedPayload,
    SessionJoinedPayload,
    SessionLeftPayload,
    ThrottleChangedPayload,
    BackendChangedPayload,
    MetricSample,
    MetricsSummary,
    UniverseInfo,
    UniverseList,
    DataStoreListQuery,
    DataStoreInfo,
    DataStorePage,
    KeyListQuery,
    KeyItem,
    KeyPage,
    ScopeList,
    EntryQuery,
    EntryView,
    EntryCreateRequest,
    EntryUpdateRequest,
    EntryDeleteQuery,
    DeleteResult,
    IncrementRequest,
    RevisionListQuery,
    RevisionInfo,
    RevisionPage,
    EntryAtQuery,
    EntryDiffQuery,
    JsonPatchOperation,
    EntryDiff,
    RevertRequest,
    JournalQuery,
    JournalItem,
    JournalPage,
    UndoRequest,
    OrderedListQuery,
    OrderedEntry,
    OrderedPage,
    OrderedEntryView,
    OrderedCreateRequest,
    OrderedUpdateRequest,
    OrderedIncrementRequest,
    IdempotencyQuery,
    SortedMapListQuery,
    SortedMapItem,
    SortedMapPage,
    SortedMapItemView,
    QueuePeekQuery,
    QueueItemView,
    QueuePeek,
    Teammate,
    TeamLock,
    TeamCaps,
    TeamNames,
    AuditHead,
    TeamStatus,
    TeamOverview,
    TeamEnableRequest,
    TeamInviteRequest,
    TeamInvite,
    TeamJoinRequest,
    LockRequest,
    LockQuery,
    LockAnswer,
    ActivityQuery,
    ActivityItem,
    ActivityPage,
    AuditProblem,
    AuditVerifyReport,
    Bookmark,
    KeyNote,
    TeamMember,
    Workspace,
    BookmarkRequest,
    NoteRequest,
    TeamPresencePayload,
    TeamActivityPayload,
    TrafficBucket,
    OperationTotal,
    BudgetUse,
    TrafficQuery,
    TrafficSeries,
    MonitorTickPayload,
    Feature,
    FeatureList,
    # search index, search and analytics (issue 12)
    Coverage,
    IndexBasis,
    StoreCoverage,
    IndexStatusQuery,
    IndexStatus,
    IndexDropResult,
    SampleGameRequest,
    SampleGameLoading,
    SampleGameStatus,
    EntryLink,
    EntryFilter,
    SearchFilter,
    SearchRequest,
    LiveCheck,
    SearchHit,
    SearchPage,
    QueryCheckRequest,
    QueryError,
    QueryCheck,
    AnalyticsScope,
    TypeShare,
    SchemaField,
    SchemaDrift,
    StoreSchema,
    SchemaReport,
    DistributionRequest,
    HistogramBin,
    Percentiles,
    RankedEntry,
    ValueCount,
    Distribution,
    EconomyRequest,
    SupplyPoint,
    CurrencyReport,
    EconomyReport,
    ProgressionRequest,
    ProgressPoint,
    ProgressSample,
    ProgressSeries,
    Progression,
    AnomaliesRequest,
    Anomaly,
    AnomalyCount,
    AnomalyReport,
    JobProgressPayload,
    JobStatePayload,
    SelectedKey,
    Selection,
    DeleteParams,
    CopyTarget,
    CopyParams,
    ExportParams,
    ImportParams,
    TransformParams,
    SetMetadataParams,
    CrawlParams,
    CrawlHistoryParams,
    JobCreateRequest,
    JobStartRequest,
    JobRollbackRequest,
    BudgetCategoryView,
    BudgetView,
    BudgetSetRequest,
    SampleImage,
    JobSample,
    BadLineView,
    JobEstimate,
    JobPlan,
    JobProgress,
    JobFailure,
    JobSummary,
    JobView,
    JobListQuery,
    JobPage,
    JobPruneRequest,
    JobPruneKept,
    JobPruneEntry,
    JobPruneReport,
    JobItemQuery,
    JobItemView,
    JobItemPage,
    UploadCreateRequest,
    UploadChunkRequest,
    UploadInfo,
    # backups, restores and erasure (issue 11)
    PreJobBackup,
    *BACKUP_MODELS,
)

MODELS_BY_NAME: dict[str, type[BaseModel]] = {model.__name__: model for model in MODELS}


@dataclass(frozen=True)
class PathParam:
    type: Any  # an annotated type; validate with TypeAdapter(param.type)
    description: str


_Opaque = Annotated[str, StringConstraints(min_length=1, max_length=256)]

# The `{name}` segments ROUTES' paths use. Keys may contain `/`: the plugin percent-encodes each
# segment and the server must match on the raw (still encoded) path.
PATH_PARAMS: dict[str, PathParam] = {
    "token_id": PathParam(_Opaque, "A token's public id (from GET /tokens)."),
    "session_id": PathParam(_Opaque, "A session id (from POST /sessions)."),
    "universe_id": PathParam(PositiveInt, "The universe (experience) id."),
    "datastore": PathParam(Name, "Data store name, 1-50 bytes of UTF-8."),
    "key": PathParam(Name, "Entry key, 1-50 bytes of UTF-8."),
    "revision": PathParam(_Opaque, "A revision id from the revision list."),
    "journal_id": PathParam(PositiveInt, "A journal item id."),
    "ordered_store": PathParam(Name, "Ordered data store name, 1-50 bytes of UTF-8."),
    "scope": PathParam(Name, "Scope, 1-50 bytes of UTF-8."),
    "entry_id": PathParam(OrderedEntryId, "Ordered entry id, 1-63 characters."),
    "sorted_map": PathParam(_Opaque, "Memory store sorted map name."),
    "item_id": PathParam(_Opaque, "Sorted map item id."),
    "queue": PathParam(_Opaque, "Memory store queue name."),
    "job_id": PathParam(JobId, "A job's id (from POST /jobs or GET /jobs)."),
    "upload_id": PathParam(UploadId, "An upload's id (from POST /uploads)."),
    "chunk_index": PathParam(NonNegativeInt, "A chunk's index, from 0."),
    "archive_id": PathParam(ArchiveId, "A backup archive's id (from GET /backups)."),
    "schedule": PathParam(ScheduleName, "A backup schedule's name."),
}

_PATH_PARAM = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True)
class Route:
    """One endpoint. `role` None means no token is needed; otherwise the least role allowed.

    `responses` lists the models a 200 may carry (more than one: tell them apart by a field,
    e.g. `resync`); empty with `status` 204 means no body; empty with 200 means a body that is no
    protocol model, of `media_type` (Prometheus text, the OpenAPI document).

    How the server serves it (not part of the schema document): `no_store` answers carry
    `Cache-Control: no-store` (tokens, presence, live streams); `large_body` routes take entry
    values (a larger body limit); `aliases` are extra absolute paths served by the same handler;
    `websocket` routes upgrade to a WebSocket carrying the `responses` as text frames.
    """

    operation_id: str
    method: Method
    path: str  # below API_PREFIX, `{name}` segments from PATH_PARAMS
    role: Role | None
    summary: str
    responses: tuple[type[BaseModel], ...] = ()
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    status: int = 200
    media_type: str = "application/json"
    no_store: bool = False
    large_body: bool = False
    aliases: tuple[str, ...] = ()
    websocket: bool = False

    @property
    def full_path(self) -> str:
        return API_PREFIX + self.path

    @property
    def auth(self) -> str:
        """The needed role as text: none, viewer, assistant, editor or admin."""
        return "none" if self.role is None else self.role.value

    @property
    def path_params(self) -> tuple[str, ...]:
        return tuple(_PATH_PARAM.findall(self.path))


_V, _AS, _E, _A = Role.VIEWER, Role.ASSISTANT, Role.EDITOR, Role.ADMIN
_DS = "/universes/{universe_id}/datastores/{datastore}"
_ENTRY = _DS + "/entries/{key}"
_ORDERED = "/universes/{universe_id}/ordered/{ordered_store}/scopes/{scope}/entries"
_MEMORY = "/universes/{universe_id}/memory"
_TEAM = "/team/{universe_id}"
_JOB = "/jobs/{job_id}"
_UPLOAD = "/uploads/{upload_id}"
_BUDGET = "/universes/{universe_id}/budget"
_BACKUP = "/backups/{archive_id}"
_SCHEDULE = "/backup-schedules/{schedule}"

ROUTES: tuple[Route, ...] = (
    Route("hello", "GET", "/hello", None, "Server identity, protocol version and schema hash.",
          (Hello,)),
    Route("pair_start", "POST", "/pair/start", None,
          "Start pairing: the server prints a one-time code to its console.",
          (PairStartResponse,), body=PairStartRequest),
    Route("pair_complete", "POST", "/pair/complete", None,
          "Finish pairing with the console code; returns a bearer token (shown once).",
          (PairCompleteResponse,), body=PairCompleteRequest, no_store=True),
    Route("list_tokens", "GET", "/tokens", _A, "List paired tokens.", (TokenList,)),
    Route("revoke_token", "DELETE", "/tokens/{token_id}", _A, "Revoke a token.", (TokenInfo,)),
    Route("whoami", "GET", "/me", _V,
          "The token this request carries: its id, name and role (never the secret).",
          (TokenInfo,), no_store=True),
    Route("open_session", "POST", "/sessions", _V, "Announce this Studio session.",
          (SessionOpened,), body=SessionOpenRequest, no_store=True),
    Route("list_sessions", "GET", "/sessions", _V, "Sessions connected to this server.",
          (SessionList,), no_store=True),
    Route("heartbeat_session", "POST", "/sessions/{session_id}/heartbeat", _V,
          "Keep a session alive.", (SessionInfo,), no_store=True),
    Route("close_session", "DELETE", "/sessions/{session_id}", _V, "End a session.",
          status=204),
    Route("set_session_viewing", "PUT", "/sessions/{session_id}/viewing", _V,
          "Say what this session shows (teammates see it in presence).", (SessionInfo,),
          body=SessionViewingRequest, no_store=True),
    Route("poll_events", "GET", "/events", _V,
          "Long-poll the event stream from a cursor; a too-old cursor answers resync.",
          (EventBatch, EventResync), query=EventsQuery, no_store=True),
    Route("events_socket", "GET", "/events/ws", _V,
          "The event stream over a WebSocket: send {\"cursor\": n}, receive batches.",
          (EventBatch, EventResync), websocket=True),
    Route("metrics", "GET", "/metrics", _V, "Prometheus metrics.",
          media_type="text/plain; version=0.0.4", no_store=True, aliases=("/metrics",)),
    Route("metrics_summary", "GET", "/metrics/summary", _V, "The server's counters as JSON.",
          (MetricsSummary,), no_store=True),
    Route("list_universes", "GET", "/universes", _V, "Universes configured on this server.",
          (UniverseList,)),
    Route("list_datastores", "GET", "/universes/{universe_id}/datastores", _V,
          "List a universe's data stores.", (DataStorePage,), query=DataStoreListQuery),
    Route("delete_datastore", "DELETE", _DS, _A,
          "Delete a data store (it can be undeleted until it is purged).", (DataStoreInfo,)),
    Route("undelete_datastore", "POST", _DS + "/undelete", _A,
          "Restore a deleted data store before it is purged.", (DataStoreInfo,)),
    Route("list_keys", "GET", _DS + "/keys", _V, "List a data store's keys.", (KeyPage,),
          query=KeyListQuery),
    Route("list_scopes", "GET", _DS + "/scopes", _V,
          "Scopes found by listing the keys of all scopes.", (ScopeList,)),
    Route("get_entry", "GET", _ENTRY, _V, "Read an entry's latest revision.", (EntryView,),
          query=EntryQuery),
    Route("create_entry", "POST", _ENTRY, _E, "Create an entry that must not exist yet.",
          (EntryView,), body=EntryCreateRequest, query=EntryQuery, large_body=True),
    Route("update_entry", "PUT", _ENTRY, _E,
          "Replace an entry's value if it is still at the expected revision.", (EntryView,),
          body=EntryUpdateRequest, query=EntryQuery, large_body=True),
    Route("delete_entry", "DELETE", _ENTRY, _E, "Delete an entry (its history stays).",
          (DeleteResult,), query=EntryDeleteQuery),
    Route("increment_entry", "POST", _ENTRY + "/increment", _E,
          "Add to an entry's integer value.", (EntryView,), body=IncrementRequest,
          query=EntryQuery),
    Route("list_revisions", "GET", _ENTRY + "/revisions", _V, "An entry's revision history.",
          (RevisionPage,), query=RevisionListQuery),
    Route("get_revision", "GET", _ENTRY + "/revisions/{revision}", _V,
          "Read one revision of an entry.", (EntryView,), query=EntryQuery),
    Route("get_entry_at", "GET", _ENTRY + "/at", _V,
          "Read the revision that was current at a time.", (EntryView,), query=EntryAtQuery),
    Route("diff_entry", "GET", _ENTRY + "/diff", _V, "JSON Patch between two revisions.",
          (EntryDiff,), query=EntryDiffQuery),
    Route("revert_entry", "POST", _ENTRY + "/revert", _E,
          "Write an old revision back as the newest one.", (EntryView,), body=RevertRequest,
          query=EntryQuery),
    Route("list_journal", "GET", "/journal", _V, "Writes made through this server, newest first.",
          (JournalPage,), query=JournalQuery),
    Route("undo_journal", "POST", "/journal/{journal_id}/undo", _E,
          "Undo one journaled write.", (EntryView, DeleteResult, OrderedEntryView),
          body=UndoRequest),
    Route("list_ordered", "GET", _ORDERED, _V, "List an ordered data store's entries.",
          (OrderedPage,), query=OrderedListQuery),
    Route("create_ordered", "POST", _ORDERED, _E, "Create an ordered entry.",
          (OrderedEntryView,), body=OrderedCreateRequest),
    Route("update_ordered", "PUT", _ORDERED + "/{entry_id}", _E, "Set an ordered entry's value.",
          (OrderedEntryView,), body=OrderedUpdateRequest),
    Route("increment_ordered", "POST", _ORDERED + "/{entry_id}/increment", _E,
          "Add to an ordered entry's value.", (OrderedEntryView,), body=OrderedIncrementRequest),
    Route("delete_ordered", "DELETE", _ORDERED + "/{entry_id}", _E, "Delete an ordered entry.",
          (DeleteResult,), query=IdempotencyQuery),
    Route("list_sorted_map", "GET", _MEMORY + "/sorted-maps/{sorted_map}/items", _V,
          "List a memory store sorted map's items.", (SortedMapPage,), query=SortedMapListQuery),
    Route("get_sorted_map_item", "GET", _MEMORY + "/sorted-maps/{sorted_map}/items/{item_id}", _V,
          "Read one sorted map item.", (SortedMapItemView,)),
    # Editor, not viewer: reading a queue hides the items from game servers for a while.
    Route("peek_queue", "GET", _MEMORY + "/queues/{queue}/peek", _E,
          "Read queue items (they become invisible to game servers for a while).",
          (QueuePeek,), query=QueuePeekQuery),
    Route("team_overview", "GET", "/team", _V, "Team sync on each universe this server knows.",
          (TeamOverview,), no_store=True),
    Route("team_status", "GET", _TEAM, _V,
          "Team sync of a universe: state, caps, teammates present, locks.", (TeamStatus,),
          no_store=True),
    Route("team_enable", "POST", _TEAM + "/enable", _E,
          "Opt this universe in to team sync through its own Open Cloud.", (TeamStatus,),
          body=TeamEnableRequest, no_store=True),
    Route("team_disable", "POST", _TEAM + "/disable", _E,
          "Stop team sync for this universe on this server.", (TeamStatus,), no_store=True),
    Route("team_invite", "POST", _TEAM + "/invites", _A,
          "Make a single-use, expiring invite code for a teammate's server.", (TeamInvite,),
          body=TeamInviteRequest, no_store=True),
    Route("team_join", "POST", "/team/join", _A, "Join a team with an invite code.",
          (TeamStatus,), body=TeamJoinRequest, no_store=True),
    Route("team_lock", "POST", _TEAM + "/locks", _E,
          "Take or renew the soft lock on an entry being edited.", (LockAnswer,),
          body=LockRequest, no_store=True),
    Route("team_unlock", "DELETE", _TEAM + "/locks", _E, "Release a soft lock.", (LockAnswer,),
          query=LockQuery, no_store=True),
    Route("team_activity", "GET", _TEAM + "/activity", _V,
          "The team's shared audit log, newest first, with filters.", (ActivityPage,),
          query=ActivityQuery, no_store=True),
    Route("audit_verify", "POST", _TEAM + "/audit/verify", _V,
          "Read the whole audit chain and check every link and the newest head seen.",
          (AuditVerifyReport,), no_store=True),
    Route("team_workspace", "GET", _TEAM + "/workspace", _V,
          "Members, shared bookmarks and notes on keys.", (Workspace,), no_store=True),
    Route("team_bookmark", "POST", _TEAM + "/bookmarks", _E, "Add or remove a shared bookmark.",
          (Workspace,), body=BookmarkRequest, no_store=True),
    Route("team_note", "PUT", _TEAM + "/notes", _E, "Set or clear the team's note on a key.",
          (Workspace,), body=NoteRequest, no_store=True),
    Route("monitor_traffic", "GET", "/monitor/traffic", _V,
          "Time series of this server's Open Cloud traffic (1 s or 10 s buckets, last hour).",
          (TrafficSeries,), query=TrafficQuery, no_store=True),
    Route("list_features", "GET", "/features", _V,
          "Each feature AVAILABLE, UNAVAILABLE with the reason, or EXPERIMENTAL.",
          (FeatureList,), no_store=True),
    # Search index, search and analytics (docs/search.md, docs/analytics.md). Search and
    # analytics read only the index and say how much of the data it covers.
    Route("index_status", "GET", "/index", _V,
          "The search index: coverage per store and how the file is protected.",
          (IndexStatus,), query=IndexStatusQuery),
    Route("drop_index", "DELETE", "/index", _A,
          "Delete the search index file (crawl again to rebuild it).", (IndexDropResult,)),
    Route("search", "POST", "/search", _V,
          "Key and value search over the index, paged, optionally verified live.",
          (SearchPage,), body=SearchRequest),
    Route("check_query", "POST", "/search/check", _V,
          "Parse a value query and say where it is wrong, without running it.", (QueryCheck,),
          body=QueryCheckRequest),
    Route("analytics_schema", "POST", "/analytics/schema", _V,
          "Field paths, types, presence and drift per store.", (SchemaReport,),
          body=AnalyticsScope),
    Route("analytics_distribution", "POST", "/analytics/distribution", _V,
          "Histogram, percentiles, top entries and value counts of one field.",
          (Distribution,), body=DistributionRequest),
    Route("analytics_economy", "POST", "/analytics/economy", _V,
          "Currency supply, distribution, Gini, top holders and supply over time.",
          (EconomyReport,), body=EconomyRequest),
    Route("analytics_progression", "POST", "/analytics/progression", _V,
          "A field against time since each key's creation, from indexed revisions.",
          (Progression,), body=ProgressionRequest),
    Route("analytics_anomalies", "POST", "/analytics/anomalies", _V,
          "Outliers, sudden jumps, type drift, near-limit sizes and user id mismatches.",
          (AnomalyReport,), body=AnomaliesRequest),
    Route("sample_game_status", "GET", "/sample-game", _V,
          "Whether the emulator's generated sample game can be loaded (never on live data).",
          (SampleGameStatus,)),
    Route("load_sample_game", "POST", "/sample-game", _E,
          "Fill the emulator with the generated, labelled sample game.", (SampleGameStatus,),
          body=SampleGameRequest),
    Route("get_budget", "GET", _BUDGET, _V,
          "The Open Cloud budget in force for a universe, and the CCU it assumes.",
          (BudgetView,), no_store=True),
    # Admin: too high a CCU lets this server crowd out the game's own servers.
    Route("set_budget", "PUT", _BUDGET, _A, "Set the concurrent users a universe's budget assumes.",
          (BudgetView,), body=BudgetSetRequest, no_store=True),
    Route("reset_budget", "DELETE", _BUDGET, _A,
          "Forget a universe's CCU: it uses the server default again.", (BudgetView,),
          no_store=True),
    # Creating a job needs editor; delete, move, import and transform need admin (checked by
    # the jobs service, which knows the kind). An assistant may only propose: a dry run a
    # person starts (docs/assistants.md). A key list and a jq program can be large.
    Route("create_job", "POST", "/jobs", _AS,
          "Plan a bulk job (dry run), or plan and start it with dry_run false.", (JobView,),
          body=JobCreateRequest, large_body=True, no_store=True),
    # Admin: it removes finished jobs (and with include_rollbackable their one-step rollback).
    Route("prune_jobs", "POST", "/jobs/prune", _A,
          "Remove finished jobs older than an age, with their items (dry run by default).",
          (JobPruneReport,), body=JobPruneRequest, no_store=True),
    Route("list_jobs", "GET", "/jobs", _V, "Jobs, newest first.", (JobPage,), query=JobListQuery,
          no_store=True),
    Route("get_job", "GET", _JOB, _V, "One job with its plan and progress.", (JobView,),
          no_store=True),
    Route("list_job_items", "GET", _JOB + "/items", _V,
          "A job's items with their outcomes, in order, paged.", (JobItemPage,),
          query=JobItemQuery, no_store=True),
    Route("start_job", "POST", _JOB + "/start", _E, "Start a planned job.", (JobView,),
          body=JobStartRequest, no_store=True),
    Route("pause_job", "POST", _JOB + "/pause", _E,
          "Pause a job; it stays paused across restarts.", (JobView,), no_store=True),
    Route("resume_job", "POST", _JOB + "/resume", _E, "Resume a paused job.", (JobView,),
          no_store=True),
    Route("cancel_job", "POST", _JOB + "/cancel", _E,
          "Cancel a job; what it already wrote stays (roll it back to undo).", (JobView,),
          no_store=True),
    Route("rollback_job", "POST", _JOB + "/rollback", _E,
          "Plan (or start) a job restoring what this job wrote, conditionally.", (JobView,),
          body=JobRollbackRequest, no_store=True),
    # Admin, like imports (the only thing uploads are for).
    Route("create_upload", "POST", "/uploads", _A,
          "Announce a file (an import) to be sent in chunks.", (UploadInfo,),
          body=UploadCreateRequest, no_store=True),
    Route("get_upload", "GET", _UPLOAD, _A, "An upload's state and missing chunks.",
          (UploadInfo,), no_store=True),
    Route("put_upload_chunk", "PUT", _UPLOAD + "/chunks/{chunk_index}", _A,
          "Send one chunk (base64); sending the same chunk again is harmless.", (UploadInfo,),
          body=UploadChunkRequest, large_body=True, no_store=True),
    Route("complete_upload", "POST", _UPLOAD + "/complete", _A,
          "Check that every chunk arrived (and the file's SHA-256); then imports can use it.",
          (UploadInfo,), no_store=True),
    Route("delete_upload", "DELETE", _UPLOAD, _A, "Delete an upload.", status=204),
    # Backups, restores and erasure (docs/backups.md). Creating each is a job: the answer is
    # its JobView, and the job routes above start, pause, resume, cancel and roll it back.
    Route("list_backups", "GET", "/backups", _V,
          "Archives in the server's backups folder, newest first.", (BackupList,),
          no_store=True),
    Route("create_backup", "POST", "/backups", _E,
          "Plan a backup (a job), or plan and start it with dry_run false.", (JobView,),
          body=BackupCreateRequest, no_store=True),
    Route("import_backup", "POST", "/backups/import/{upload_id}", _A,
          "Move an uploaded archive (a portable one from another machine) into the backups "
          "folder.", (BackupSummary,), body=ArchiveKeyRequest, no_store=True),
    Route("get_backup", "GET", _BACKUP, _V, "One archive's manifest.", (BackupView,),
          no_store=True),
    Route("open_backup", "POST", _BACKUP + "/open", _V,
          "One archive's manifest, opened with its passphrase.", (BackupView,),
          body=ArchiveKeyRequest, no_store=True),
    Route("verify_backup", "POST", _BACKUP + "/verify", _V,
          "Decrypt an archive and check every checksum; names the first bad entry.",
          (BackupVerifyReport,), body=ArchiveKeyRequest, no_store=True),
    Route("diff_backup", "POST", _BACKUP + "/diff", _V,
          "Compare an archive with another: created, changed (with patches), deleted.",
          (BackupDiff,), body=BackupDiffRequest, no_store=True),
    Route("delete_backup", "DELETE", _BACKUP, _A, "Delete an archive file.", status=204),
    Route("list_backup_schedules", "GET", "/backup-schedules", _V,
          "Scheduled backups and their last runs.", (BackupScheduleList,), no_store=True),
    Route("put_backup_schedule", "PUT", _SCHEDULE, _A,
          "Create or replace a scheduled backup with its retention.", (BackupScheduleView,),
          body=BackupScheduleRequest, no_store=True),
    Route("delete_backup_schedule", "DELETE", _SCHEDULE, _A,
          "Stop a scheduled backup (its archives stay).", status=204),
    Route("run_backup_schedule", "POST", _SCHEDULE + "/run", _E,
          "Run a scheduled backup now, or answer with its run already starting or running "
          "(one at a time); retention applies when it succeeds.", (JobView,),
          no_store=True),
    # Restores write many entries, like imports: the jobs service asks for admin.
    Route("create_restore", "POST", "/restores", _E,
          "Plan a restore (a job) of an archive or of the state at a moment.", (JobView,),
          body=RestoreCreateRequest, large_body=True, no_store=True),
    Route("get_restore_plan", "GET", "/restores/{job_id}/plan", _V,
          "A restore's keys: action, source, precision, patch and outcome, paged.",
          (RestorePlanPage,), query=RestorePlanQuery, no_store=True),
    Route("create_erasure", "POST", "/erasures", _A,
          "Find a player's data (a job's dry run); start it to erase it.", (JobView,),
          body=ErasureCreateRequest, no_store=True),
    Route("get_erasure", "GET", "/erasures/{job_id}", _A,
          "What an erasure found where, and what it scrubs.", (ErasureView,), no_store=True),
    Route("get_erasure_report", "GET", "/erasures/{job_id}/report", _A,
          "The erasure report (JSON and text), until it is forgotten.", (ErasureReportView,),
          no_store=True),
    Route("forget_erasure_report", "DELETE", "/erasures/{job_id}/report", _A,
          "Forget the report once it is saved: the server then keeps nothing naming the player.",
          status=204),
    Route("get_erasure_patterns", "GET", "/erasure-patterns", _V,
          "Which keys hold a player's data (key patterns per data store, ordered stores).",
          (ErasurePatternsView,), no_store=True),
    Route("put_erasure_patterns", "PUT", "/erasure-patterns", _A,
          "Set which keys hold a player's data.", (ErasurePatternsView,),
          body=ErasurePatternsRequest, no_store=True),
    Route("openapi", "GET", "/openapi.json", _V, "This API's OpenAPI 3.1 description."),
)  # fmt: skip


ROUTES_BY_ID: dict[str, Route] = {route.operation_id: route for route in ROUTES}
# (method, path) pairs reachable without a token; HEAD is served with every GET.
OPEN_ROUTES: frozenset[tuple[str, str]] = frozenset(
    (method, route.full_path)
    for route in ROUTES
    if route.role is None
    for method in ((route.method, "HEAD") if route.method == "GET" else (route.method,))
)


def _route_document(route: Route) -> dict[str, Any]:
    return {
        "operation_id": route.operation_id,
        "method": route.method,
        "path": route.full_path,
        "auth": route.auth,
        "status": route.status,
        "media_type": route.media_type,
        "body": route.body.__name__ if route.body else None,
        "query": route.query.__name__ if route.query else None,
        "responses": [model.__name__ for model in route.responses],
    }


@cache
def _schema_document() -> dict[str, Any]:
    _, top = models_json_schema(
        [(model, "validation") for model in MODELS], ref_template="#/$defs/{model}"
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": SCHEMA_TITLE,
        "x-protocol-major": PROTOCOL_MAJOR,
        "x-protocol-minor": PROTOCOL_MINOR,
        "$defs": top["$defs"],
        "x-path-params": {
            name: TypeAdapter(param.type).json_schema() | {"description": param.description}
            for name, param in PATH_PARAMS.items()
        },
        # Request/response routes: what the plugin's Api wraps. The WebSocket stream has a
        # client of its own and stays out, so the document (and its hash) describe requests.
        "x-routes": [_route_document(route) for route in ROUTES if not route.websocket],
        "x-event-payloads": {str(kind): model.__name__ for kind, model in EVENT_PAYLOADS.items()},
    }


def schema_document() -> dict[str, Any]:
    """The JSON Schema of every model plus the route table (a fresh copy, safe to modify)."""
    return copy.deepcopy(_schema_document())


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@cache
def schema_hash() -> str:
    """SHA-256 hex of the canonical schema document; `Hello.schema_hash` and Luau SCHEMA_HASH."""
    return hashlib.sha256(canonical_json(_schema_document()).encode("utf-8")).hexdigest()


def _retarget_refs(value: Any) -> Any:
    """Point `#/$defs/X` references at `#/components/schemas/X` (OpenAPI's location)."""
    if isinstance(value, dict):
        return {
            key: (
                item.replace("#/$defs/", "#/components/schemas/", 1)
                if key == "$ref" and isinstance(item, str)
                else _retarget_refs(item)
            )
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_retarget_refs(item) for item in value]
    return value


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _parameters(route: Route, defs: dict[str, Any]) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    for name in route.path_params:
        schema = TypeAdapter(PATH_PARAMS[name].type).json_schema()
        params.append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "description": PATH_PARAMS[name].description,
                "schema": schema,
            }
        )
    if route.query is not None:
        query_schema = defs[route.query.__name__]
        required = set(query_schema.get("required", []))
        for name, schema in query_schema["properties"].items():
            param: dict[str, Any] = {
                "name": name,
                "in": "query",
                "required": name in required,
                "schema": schema,
            }
            if "description" in schema:
                param["description"] = schema["description"]
            params.append(param)
    return params


def _responses(route: Route) -> dict[str, Any]:
    error = {
        "description": "An error envelope; `error.code` is one of ErrorCode.",
        "content": {"application/json": {"schema": _ref(ErrorEnvelope)}},
    }
    if route.status == 204:
        return {"204": {"description": "Done; no body."}, "default": error}
    if not route.responses:
        schema: dict[str, Any] = (
            {"type": "object"} if route.media_type == "application/json" else {"type": "string"}
        )
    elif len(route.responses) == 1:
        schema = _ref(route.responses[0])
    else:
        schema = {"oneOf": [_ref(model) for model in route.responses]}
    ok = {"description": route.summary, "content": {route.media_type: {"schema": schema}}}
    return {str(route.status): ok, "default": error}


def openapi_document(server_version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 description of the protocol, built from ROUTES and the models."""
    defs = _retarget_refs(schema_document()["$defs"])
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        operation: dict[str, Any] = {
            "operationId": route.operation_id,
            "summary": route.summary,
            "security": [] if route.role is None else [{"bearer": []}],
            "x-required-role": route.auth,
            "responses": _responses(route),
        }
        parameters = _parameters(route, defs)
        if parameters:
            operation["parameters"] = parameters
        if route.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _ref(route.body)}},
            }
        paths.setdefault(route.full_path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "DataStore Manager Pro companion server",
            "version": server_version,
            "description": (
                f"{SCHEMA_TITLE} {PROTOCOL_MAJOR}.{PROTOCOL_MINOR}, schema hash {schema_hash()}. "
                "Loopback only; every route but hello and pairing needs a bearer token."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": defs,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


__all__ = [
    "API_PREFIX",
    "MODELS",
    "MODELS_BY_NAME",
    "OPEN_ROUTES",
    "PATH_PARAMS",
    "ROUTES",
    "ROUTES_BY_ID",
    "PathParam",
    "Route",
    "canonical_json",
    "openapi_document",
    "schema_document",
    "schema_hash",
]
