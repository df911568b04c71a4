"""How a CLI command finds the running `dsm serve`: one --server option for every command."""

from __future__ import annotations

import argparse
import os

from .config import DEFAULT_PORT

SERVER_ENV = "DSM_SERVER"
DEFAULT_SERVER_URL = f"http://127.0.0.1:{DEFAULT_PORT}"


def add_server_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        default=os.environ.get(SERVER_ENV, DEFAULT_SERVER_URL),
        help=f"the running dsm serve's URL (default ${SERVER_ENV} or {DEFAULT_SERVER_URL})",
    )
