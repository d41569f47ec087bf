"""The daemon as a subprocess re-reads its included files on SIGHUP: a council's file changed is applied, a
broken one is refused at its own FILE:LINE and the running config kept."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.helpers.daemon import DaemonProcess, Daemons, free_port

PAYROLL = """# Dorset County Council
services:
  payroll:
    active: dorset
    sites:
      dorset: {probes: [{name: up, interval: 1s, timeout: 500ms, command: {argv: [/bin/true]}}]}
"""
LIBRARY = """
  library:
    active: dorset
    sites:
      dorset: {probes: [{name: up, interval: 1s, timeout: 500ms, command: {argv: [/bin/true]}}]}
"""


async def test_reload_rereads_a_changed_include(tmp_path: Path, daemons: Daemons) -> None:
    port = free_port()
    main = tmp_path / "bcd.yaml"
    main.write_text(f"sites:\n  dorset: {{}}\nstate_dir: {tmp_path / 'state'}\nserver: {{listen: '127.0.0.1:{port}'}}\n"
                    "include: [conf.d/*.yaml]\n")
    council = tmp_path / "conf.d" / "dorset.yaml"
    council.parent.mkdir()
    council.write_text(PAYROLL)
    daemon = await daemons.start(DaemonProcess(main, port))
    assert (await daemon.get("/api/v1/services/library"))[0] == 404

    council.write_text(PAYROLL + LIBRARY)
    daemon.send(signal.SIGHUP)
    await daemon.wait_log(lambda e: e.get("event") == "reloaded" and e.get("services") == 2)
    assert (await daemon.get("/api/v1/services/library"))[0] == 200

    council.write_text(PAYROLL + LIBRARY.replace("active: dorset", "active: dorset\n    colour: blue"))
    daemon.send(signal.SIGHUP)
    failed = await daemon.wait_log(lambda e: e.get("event") == "config_reload_failed")
    assert failed["errors"] == [f"{council}:10: services.library.colour: unknown key"]
    assert (await daemon.get("/api/v1/services/library"))[0] == 200  # the running config is kept
