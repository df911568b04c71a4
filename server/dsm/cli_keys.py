"""`dsm key add | list | remove`: manage the Open Cloud API keys held in the vault.

The API key itself is never taken from the command line (it would land in shell history and in
every process listing): it is typed at a hidden prompt, or piped in with `--stdin`.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence
from datetime import UTC
from typing import TextIO

from .paths import data_dir
from .storage.vault import (
    ENVIRONMENTS,
    PASSPHRASE_ENV,
    KdfParams,
    KeySummary,
    Vault,
    VaultError,
    has_terminal,
)

# Production scrypt cost; tests replace it with a cheap one.
VAULT_KDF = KdfParams()


class KeyInputError(Exception):
    """The API key could not be read from the prompt or standard input."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `key` command to the top-level `dsm` parser."""
    parser = subparsers.add_parser(
        "key",
        help="manage the Open Cloud API keys the server uses",
        description="Store, list and remove Roblox Open Cloud API keys. Keys are kept encrypted "
        "in the vault (OS keyring, or a passphrase-protected file when there is none).",
    )
    actions = parser.add_subparsers(dest="key_command", required=True, metavar="ACTION")

    add = actions.add_parser(
        "add",
        help="store an API key (typed at a hidden prompt, or piped with --stdin)",
        description="Store an Open Cloud API key for one or more experiences. The key is read "
        "at a hidden prompt, or from standard input with --stdin; never pass it as an argument.",
    )
    add.add_argument("--label", required=True, help="a name for the key, e.g. 'live game'")
    add.add_argument(
        "--universe",
        dest="universes",
        type=_universe_id,
        action="append",
        required=True,
        metavar="UNIVERSE_ID",
        help="experience (universe) id the key is for; repeat for several",
    )
    add.add_argument(
        "--env",
        dest="environment",
        choices=ENVIRONMENTS,
        required=True,
        help="which environment these universes are",
    )
    add.add_argument(
        "--stdin",
        action="store_true",
        help="read the key from standard input (one line) instead of prompting",
    )

    actions.add_parser("list", help="list stored keys (masked)", description="List stored keys.")

    remove = actions.add_parser(
        "remove", help="delete a stored key", description="Delete a stored key from the vault."
    )
    remove.add_argument("key", metavar="ID_OR_LABEL", help="the key's id or label")


def run(
    args: argparse.Namespace,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Execute a parsed `dsm key ...` command; returns the process exit code."""
    stdin = sys.stdin if stdin is None else stdin
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    try:
        if args.key_command == "add":
            return _add(args, stdin, out, err)
        if args.key_command == "list":
            return _list(out)
        if args.key_command == "remove":
            return _remove(args.key, out)
    except (VaultError, KeyInputError) as exc:
        print(f"error: {exc}", file=err)
        return 1
    except KeyboardInterrupt:
        print("\ncancelled; nothing was changed", file=err)
        return 130
    print(f"error: unknown key action {args.key_command!r}", file=err)
    return 2


def _open_vault() -> Vault:
    return Vault.open(data_dir(), kdf=VAULT_KDF)


def _add(args: argparse.Namespace, stdin: TextIO, out: TextIO, err: TextIO) -> int:
    vault = _open_vault()  # unlock first, so a wrong passphrase does not waste a pasted key
    api_key = _read_api_key(args.stdin, stdin)
    new_vault = vault.backend is None
    record = vault.add_key(
        label=args.label,
        api_key=api_key,
        universes=args.universes,
        environment=args.environment,
    )
    summary = record.summary()
    universes = ", ".join(str(u) for u in summary.universes)
    print(
        f"Added key {summary.label!r} (id {summary.id}, {summary.masked_key}) for universe "
        f"{universes} [{summary.environment}].",
        file=out,
    )
    if new_vault:
        print(_storage_note(vault), file=err)
    return 0


def _list(out: TextIO) -> int:
    vault = _open_vault()
    keys = vault.list_keys()
    if not keys:
        print("No Open Cloud API keys are stored.", file=out)
        print("Add one with: dsm key add --label NAME --universe ID --env production", file=out)
        return 0
    print(_table(keys), file=out)
    where = "key in the OS keyring" if vault.backend == "keyring" else "passphrase-protected"
    print(f"\nVault: {vault.path} ({where})", file=out)
    return 0


def _remove(id_or_label: str, out: TextIO) -> int:
    removed = _open_vault().remove_key(id_or_label)
    print(f"Removed key {removed.label!r} (id {removed.id}).", file=out)
    print(
        "It still works at Roblox: revoke it on the Creator Dashboard if it should no longer.",
        file=out,
    )
    return 0


def _read_api_key(from_stdin: bool, stdin: TextIO) -> str:
    if from_stdin:
        lines = [line.strip() for line in stdin.read().splitlines() if line.strip()]
        if not lines:
            raise KeyInputError("standard input was empty; pipe the API key in, e.g. < key.txt")
        if len(lines) > 1:
            raise KeyInputError("standard input held several lines; give exactly one API key")
        return lines[0]
    if not has_terminal():
        raise KeyInputError(
            "there is no terminal to type the API key into; pipe it in with --stdin"
        )
    api_key = getpass.getpass("Open Cloud API key (input hidden): ")
    if not api_key.strip():
        raise KeyInputError("no API key was entered; nothing was stored")
    return api_key


def _storage_note(vault: Vault) -> str:
    if vault.backend == "keyring":
        return f"Created the vault {vault.path}; its key is kept in the OS keyring."
    return (
        f"Note: no usable OS keyring was found, so the vault {vault.path} is encrypted with "
        f"your passphrase. Without it the stored keys cannot be recovered. For unattended "
        f"use, {PASSPHRASE_ENV} supplies it."
    )


def _table(keys: Sequence[KeySummary]) -> str:
    rows = [("ID", "LABEL", "ENV", "UNIVERSES", "KEY", "ADDED (UTC)")]
    for k in keys:
        rows.append(
            (
                k.id,
                k.label,
                k.environment,
                ",".join(str(u) for u in k.universes),
                k.masked_key,
                k.added_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M"),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _universe_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a universe id (a whole number, as in the Creator Dashboard)"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"universe id must be positive, not {value}")
    return value
