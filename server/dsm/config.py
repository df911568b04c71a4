"""Settings of one companion server process."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shared_schema.common import Role

DEFAULT_PORT = 8765  # documented in the README; `--port` changes it


@dataclass
class ServerConfig:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    # Embedded emulator (used when the vault holds no Open Cloud key).
    emulator_universes: list[int] = field(default_factory=lambda: [1])
    emulator_limits: str = "documented"
    # Share of each Open Cloud budget left for the live game's servers.
    reserve_share: float = 0.5
    # Requests per minute per budget category for the client's own pacing; None keeps the
    # documented budgets at the CCU. Tests and benchmarks that drive many writes raise it.
    budget_rpm: float | None = None
    # Concurrent users assumed for universes without their own `dsm budget set` CCU.
    ccu: int = 0
    open_cloud_base_url: str = "https://apis.roblox.com"
    # `dsm serve --upstream URL`: this Open Cloud-compatible server instead of the embedded
    # emulator (with no key) or Roblox (with keys).
    upstream_url: str | None = None
    # Vault passphrase source for headless use; None means prompt or OS keyring.
    vault_passphrase: str | None = None
    session_ttl_seconds: float = 45.0
    event_buffer_size: int = 2048
    pairing_code_ttl_seconds: float = 300.0
    # `dsm serve --sample-game`: load the emulator's generated sample game with this seed.
    sample_game_seed: int | None = None
    # Tokens from pairing get this role; `dsm tokens role ID admin` grants more on purpose.
    pairing_role: Role = Role.EDITOR
    # Jobs: how long POST /jobs waits for the plan before answering, and how held sessions
    # are retried (held_sessions: retry). Tests shorten them.
    job_plan_wait_seconds: float = 10.0
    job_held_wait_seconds: float = 15 * 60.0
    job_held_retry_seconds: float = 30.0
    # Automatic retention (docs/jobs.md, "Pruning old jobs"): finished jobs older than this
    # many days that nothing needs go, never one that could still be rolled back; None: off.
    # The first pass runs this long after the start, then one a day.
    job_retention_days: int | None = 90
    job_retention_first_seconds: float = 600.0
    # Scheduled backups run while the server runs; tests that drive them by hand turn this off.
    backup_schedules: bool = True
    # AI assistants (`dsm mcp`, tokens with the assistant role; docs/assistants.md): whether
    # they may propose jobs, and the caps per assistant token over a sliding minute: API
    # requests, and Open Cloud requests made on their behalf (reads, listings, job planning).
    assistant_proposals: bool = True
    assistant_requests_per_minute: int = 120
    assistant_opencloud_per_minute: int = 60
