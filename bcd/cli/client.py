"""A small synchronous client of the daemon's HTTP API for the CLI (stdlib only: the CLI stays fast)."""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TIMEOUT = 10.0


class ApiError(Exception):
    """The daemon refused or could not be reached; str() is a one-line explanation."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class Client:
    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.token = token

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Client:
        token = os.environ.get("BCD_TOKEN")
        if getattr(args, "token_file", None):
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        return cls(args.url, token)

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("POST", path, body)

    def stream(self, path: str, last_id: int = 0) -> Iterator[dict[str, Any]]:
        """Server-sent events from `path`, resuming after event `last_id`; runs until interrupted."""
        request = urllib.request.Request(self.url + path, headers={"Accept": "text/event-stream"})
        if last_id:
            request.add_header("Last-Event-ID", str(last_id))
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                yield from _stream_lines(response)
        except urllib.error.HTTPError as exc:
            raise ApiError(_problem_text(exc), exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            raise ApiError(f"cannot reach {self.url}: {getattr(exc, 'reason', exc)}") from None

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise ApiError(_problem_text(exc), exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(f"cannot reach {self.url}: {reason}") from None


def _stream_lines(response: Any) -> Iterator[dict[str, Any]]:
    data: list[str] = []
    for raw in response:
        line = raw.decode().rstrip("\n")
        if line.startswith("data: "):
            data.append(line[6:])
        elif not line and data:
            yield json.loads("\n".join(data))
            data = []


def _problem_text(exc: urllib.error.HTTPError) -> str:
    try:
        problem = json.loads(exc.read())
        detail = problem.get("detail") or problem.get("title")
        problems = problem.get("problems")  # a config that cannot be loaded: one FILE:LINE: path: message a line
        if isinstance(problems, list):
            detail += "".join(f"\n{line}" for line in problems)
    except (ValueError, AttributeError, TypeError):
        detail = exc.reason
    return f"HTTP {exc.code}: {detail}"
