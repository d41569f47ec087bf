"""`bcd reload`: load the daemon's config file again (`POST /api/v1/reload`, operator), as a SIGHUP does; an
invalid config changes nothing and its problems are printed, one `FILE:LINE: path: message` a line."""

from __future__ import annotations

import argparse
import json
from typing import Any

from bcd.cli.plans import ClientKit


def add_commands(commands: Any, kit: ClientKit) -> None:
    reload = commands.add_parser("reload", help="load the daemon's config file again (operator); an invalid one "
                                 "changes nothing")
    kit.client_arguments(reload)
    reload.add_argument("--json", action="store_true", help="print the API's JSON")
    reload.set_defaults(handler=kit.api(lambda args: _reload(kit, args)))


def _reload(kit: ClientKit, args: argparse.Namespace) -> int:
    answer = kit.call(args, "POST", "/api/v1/reload", {})
    print(json.dumps(answer, indent=2) if args.json else answer["detail"])
    return 0
