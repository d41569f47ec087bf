"""What every command that talks to the daemon's API shares: `--url` and `--token-file`, one call, an API
refusal or an unreachable daemon as one line on stderr, and times as the commands show them. Exit codes: 0 ok,
1 operation failed (the API refused), 2 usage or config error (also: the daemon cannot be reached)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_URL = "http://127.0.0.1:9847"


def add_client_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get("BCD_URL", DEFAULT_URL), help="the daemon's API")
    parser.add_argument("--token-file", help="file holding the API token (else $BCD_TOKEN)")


def call(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    from bcd.cli.client import Client

    return Client.from_args(args).request(method, path, body)


def api(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Client commands: an API refusal or an unreachable daemon is one line on stderr and exit 1."""

    def wrapped(args: argparse.Namespace) -> int:
        from bcd.cli.client import ApiError

        try:
            return func(args)
        except ApiError as exc:
            print(f"bcd: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except OSError as exc:
            print(f"bcd: {exc}", file=sys.stderr)
            return EXIT_USAGE

    return wrapped


def local(text: str) -> str:
    """An ISO time without an offset is this machine's local time (the API takes it as UTC)."""
    import datetime as dt

    try:
        return dt.datetime.fromisoformat(text).astimezone().isoformat()
    except ValueError:
        return text  # the API says what is wrong with it


def when(timestamp: float | None) -> str:
    import datetime as dt

    if timestamp is None:
        return "-"
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
