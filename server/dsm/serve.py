"""`dsm serve`: unlock the vault, then run the companion server on loopback."""

from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass

from aiohttp import web

from . import __version__
from .app import create_app
from .config import ServerConfig
from .http.appkeys import DATA
from .http.connections import GuardedAppRunner, install_log_throttle
from .http.guards import BoundPort
from .services.upstream import UpstreamUnreachable
from .storage.crypto import new_key
from .storage.vault import ApiKeyRecord, Vault, VaultError, VaultLockedError

log = logging.getLogger("dsm.serve")


@dataclass
class Unlocked:
    keys: list[ApiKeyRecord]
    data_key: bytes
    persistent: bool  # False: the data key lives only in memory for this run


def unlock(config: ServerConfig) -> Unlocked:
    """Open the vault before the event loop starts (scrypt takes about half a second)."""
    vault = Vault.open(config.data_dir)
    keys = vault.records()
    try:
        return Unlocked(keys, vault.data_key(), persistent=True)
    except VaultLockedError as exc:
        if keys:
            raise  # live keys without their vault passphrase: refuse, never weaken
        # No Open Cloud key and no way to ask for a passphrase: emulator data only, so run with
        # a key held in memory. Cache and journal of this run are unreadable after it ends.
        print(
            f"warning: {exc}. Running on the emulator with a cache and journal key held only in "
            "memory: undo history will not survive a restart. Set DSM_VAULT_PASSPHRASE or run "
            "`dsm serve` in a terminal once to keep it.",
            file=sys.stderr,
        )
        return Unlocked([], new_key(), persistent=False)


async def run_server(
    config: ServerConfig, unlocked: Unlocked, stop: asyncio.Event | None = None
) -> None:
    port = BoundPort(config.port)
    app = create_app(config, keys=unlocked.keys, data_key=unlocked.data_key, port=port)
    install_log_throttle()
    runner = GuardedAppRunner(app, access_log=None)
    await runner.setup()
    # Cleaned up on every way out, a port in use included: otherwise the lifecycles opened by
    # setup are torn down by the event loop's shutdown, with tracebacks, after the exit message.
    try:
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None)
        bound = sockets[0].getsockname()[1] if sockets else config.port
        port.set(bound)
        _print_banner(config, app, bound)
        await (stop or asyncio.Event()).wait()
    finally:
        await runner.cleanup()


def _print_banner(config: ServerConfig, app: web.Application, bound: int) -> None:
    upstream = app[DATA].upstream
    print(f"DataStore Manager Pro companion server {__version__}")
    print(f"  listening : http://{config.host}:{bound} (loopback only)")
    print(f"  data      : {config.data_dir}")
    if config.upstream_url is not None:
        said = (
            "it says it is an emulator (X-DSM-Emulator)"
            if upstream.backend.value == "EMULATOR"
            else "it does not say it is an emulator, so its data is treated as live"
        )
        print(f"  backend   : {upstream.backend.value} - {config.upstream_url} ({said})")
    elif upstream.emulator is not None:
        print(
            f"  backend   : EMULATOR - embedded Open Cloud emulator at {upstream.emulator.base_url}"
        )
        print("              everything shown is emulator data; add a key with `dsm key add`")
    else:
        print(f"  backend   : LIVE - {config.open_cloud_base_url}")
    print("Pair the Studio plugin: click Connect in the plugin; the code appears here.")
    sys.stdout.flush()


def serve(config: ServerConfig) -> int:
    try:
        unlocked = unlock(config)
    except VaultError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        asyncio.run(run_server(config, unlocked))
    except KeyboardInterrupt:
        pass
    except UpstreamUnreachable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr)
        return 1
    return 0
