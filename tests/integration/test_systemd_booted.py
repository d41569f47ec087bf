"""bcd under a real systemd: the shipped unit (systemd/bcd.service, with a test drop-in that only says where this
checkout's bcd is, where its output goes, a shorter watchdog and no boot before it) started, reloaded, stopped
and watched by systemd booted in namespaces of its own (tests/helpers/systemd_ns.py)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import pytest

from tests.helpers import Broker, free_port
from tests.helpers.prometheus import http_json, poll
from tests.helpers.systemd_ns import INSIDE, ROOT, BootedSystemd, unavailable, wait_for_line
from tests.integration.test_mqtt import KEY, Watcher, command, payload, sign

LOG = INSIDE / "bcd.log"
WATCHDOG = 2  # seconds: the drop-in's WatchdogSec= (the unit's 30 s is too long to wait for here)

CONFIG = """
instance: booted
vantage: dorset
server: {{listen: "127.0.0.1:{port}"}}
sites: {{dorset: {{}}, hampshire: {{}}}}
defaults: {{interval: 250ms, timeout: 200ms, rise: 1, fall: 2}}
services:
{services}
"""
SERVICE = """  {name}:
    active: dorset
    sites:
      dorset: {{probes: [{{name: check, command: {{argv: [/bin/true]}}}}]}}
      hampshire: {{probes: [{{name: check, command: {{argv: [/bin/true]}}}}]}}
"""


def config(port: int, *services: str, mqtt: str = "") -> str:
    """The estate's YAML: `services`, each on both sites; `mqtt`: an `mqtt:` section's flow mapping, if any."""
    text = CONFIG.format(port=port, services="".join(SERVICE.format(name=name) for name in services))
    return text + (f"mqtt: {mqtt}\n" if mqtt else "")


def drop_in() -> str:
    """Where this checkout's bcd is and how it is run (module docstring); nothing of the hardening changes.
    DefaultDependencies=no: sysinit.target would start what a boot starts (tests/helpers/systemd_ns.py)."""
    return (
        "[Unit]\nDefaultDependencies=no\n[Service]\nExecStart=\n"
        f"ExecStart={BootedSystemd.python()} -m bcd run -c /etc/bcd/bcd.yaml\n"
        f"Environment=PYTHONPATH={INSIDE}/src:{INSIDE}/site-packages LD_LIBRARY_PATH={INSIDE}/python/lib "
        "PYTHONDONTWRITEBYTECODE=1\n"
        f"StandardOutput=append:{LOG}\nStandardError=inherit\n"
        f"WatchdogSec={WATCHDOG}s\n"
    )


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def systemd(tmp_path_factory: pytest.TempPathFactory, port: int) -> Iterator[BootedSystemd]:
    reason = unavailable()
    if reason is not None:
        pytest.skip(f"systemd cannot be booted here: {reason}")
    units = {"bcd.service": (ROOT / "systemd" / "bcd.service").read_text(), "bcd.service.d/test.conf": drop_in()}
    with BootedSystemd(tmp_path_factory.mktemp("systemd"), units, config(port, "payroll")) as booted:
        yield booted


@pytest.fixture
def bcd(systemd: BootedSystemd, port: int) -> Iterator[BootedSystemd]:
    """bcd started by `systemctl start` (which returns once bcd said READY=1), stopped after the test."""
    systemd.path("/etc/bcd/bcd.yaml").write_text(config(port, "payroll"))
    systemd.systemctl("start", "bcd")
    try:
        yield systemd
    finally:
        systemd.systemctl("stop", "bcd", check=False)
        systemd.systemctl("reset-failed", "bcd", check=False)


def main_process(systemd: BootedSystemd) -> dict[str, str]:
    """/proc/MAINPID/status of bcd, as fields."""
    pid = systemd.show("bcd", "MainPID")["MainPID"]
    status = systemd.path(f"/proc/{pid}/status").read_text()
    return dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)


def log_lines(systemd: BootedSystemd, event: str) -> list[dict[str, object]]:
    lines = systemd.path(LOG).read_text().splitlines()
    return [record for line in lines if line.startswith("{") and (record := json.loads(line)).get("event") == event]


def test_start_waits_for_ready_and_runs_as_a_dynamic_user_with_no_privilege(bcd: BootedSystemd, port: int) -> None:
    shown = bcd.show("bcd", "ActiveState", "SubState", "StatusText", "Result")
    assert shown["ActiveState"] == "active" and shown["SubState"] == "running", shown
    assert shown["StatusText"].startswith("1 service, 2 probes"), shown  # sd_notify STATUS=, read by systemd
    status = main_process(bcd)
    uid = status["Uid"].split()[0]
    assert uid != "0" and int(uid) >= 61184, status["Uid"]  # DynamicUser=: systemd's 61184-65519 range
    assert status["CapEff"] == "0000000000000000"
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"  # SystemCallFilter=
    code, body = http_json("GET", f"http://127.0.0.1:{port}/healthz")
    assert code == 200, body
    assert bcd.path("/var/lib/private/bcd/bcd.sqlite").exists()  # StateDirectory=, bcd's default state_dir


def test_systemctl_reload_rereads_the_config_and_journals_who_sent_it(bcd: BootedSystemd, port: int) -> None:
    uid = main_process(bcd)["Uid"].split()[0]
    bcd.path("/etc/bcd/bcd.yaml").write_text(config(port, "payroll", "library"))
    bcd.systemctl("reload", "bcd")  # ExecReload=/bin/kill -HUP $MAINPID
    poll(lambda: [line for line in log_lines(bcd, "reloaded") if line.get("services") == 2], 20,
         "the reload's log line")
    code, body = http_json("GET", f"http://127.0.0.1:{port}/api/v1/services")
    assert code == 200 and {service["name"] for service in body["services"]} == {"payroll", "library"}, body
    loads = log_lines(bcd, "config_load_journaled")
    # ExecReload='s `kill`, reaped before it could be named; its user: the service's own dynamic user
    assert re.fullmatch(rf"SIGHUP from pid \d+ \(user bcd, uid {uid}\)", str(loads[-1]["by"])), loads[-1]
    assert bcd.show("bcd", "ActiveState")["ActiveState"] == "active"


def test_a_reload_of_a_broken_config_keeps_the_old_one_and_systemctl_status_says_so(bcd: BootedSystemd,
                                                                                     port: int) -> None:
    bcd.path("/etc/bcd/bcd.yaml").write_text(config(port, "payroll").replace("rise: 1", "rise: 0"))
    bcd.systemctl("reload", "bcd")
    failed = poll(lambda: log_lines(bcd, "config_reload_failed"), 20, "the failed reload's log line")
    assert "/etc/bcd/bcd.yaml:6: defaults.rise" in json.dumps(failed[-1]), failed[-1]
    shown = poll(lambda: (shown := bcd.show("bcd", "ActiveState", "StatusText"))["StatusText"].endswith(
        "last reload FAILED, running the previous config") and shown, 10, "STATUS= to say the reload failed")
    assert shown["ActiveState"] == "active", shown  # still running, on the config it had
    assert http_json("GET", f"http://127.0.0.1:{port}/healthz")[0] == 200
    bcd.path("/etc/bcd/bcd.yaml").write_text(config(port, "payroll"))  # fixed: the next reload clears it
    bcd.systemctl("reload", "bcd")
    poll(lambda: "FAILED" not in bcd.show("bcd", "StatusText")["StatusText"], 20, "STATUS= without the failure")


async def test_a_secret_reaches_bcd_only_through_load_credential(systemd: BootedSystemd, port: int,
                                                                  mosquitto: Broker) -> None:
    """The README's way with secrets: root-only under /etc/bcd/secrets/, handed over by LoadCredential= in a
    drop-in, read by a relative `*_file:` key from $CREDENTIALS_DIRECTORY (the dynamic user cannot read the
    file itself). Here the MQTT commands' HMAC key: a signed command is accepted only if bcd read it."""
    secret = systemd.path("/etc/bcd/secrets/mqtt_command_key")
    secret.parent.mkdir(mode=0o700)
    secret.write_text(KEY + "\n")
    secret.chmod(0o600)
    drop_in = systemd.path("/run/systemd/system/bcd.service.d/credential.conf")
    drop_in.write_text("[Service]\nLoadCredential=mqtt_command_key:/etc/bcd/secrets/mqtt_command_key\n")
    prefix = f"bcd-booted/{port}"
    systemd.path("/etc/bcd/bcd.yaml").write_text(config(port, "payroll", mqtt=(
        f'{{url: "mqtt://{mosquitto.host}:{mosquitto.port}", topic_prefix: "{prefix}", '
        'commands: {enabled: true, hmac_key_file: mqtt_command_key}}')))
    systemd.systemctl("daemon-reload")
    try:
        systemd.systemctl("start", "bcd")
        async with Watcher(mosquitto, f"{prefix}/replies/#") as watcher:
            await watcher.publish(f"{prefix}/commands", sign(command("credential-1", action="ack")))
            reply = payload(await watcher.wait(f"{prefix}/replies/credential-1"))
        assert reply == b"accepted: nothing to acknowledge", reply
    finally:
        systemd.systemctl("stop", "bcd", check=False)
        drop_in.unlink()
        systemd.systemctl("daemon-reload")


def test_a_config_that_does_not_load_fails_the_start_with_its_reason_and_systemd_keeps_trying(
    systemd: BootedSystemd, port: int,
) -> None:
    """exit 2 fails `systemctl start` at once, with the `FILE:LINE: path: message` line in the log; Restart=
    on-failure then tries again every few seconds, so that a start refused for a reason that passes (a full
    disk, a listen address not up yet) ends by itself once it has."""
    systemd.path("/etc/bcd/bcd.yaml").write_text(config(port, "payroll").replace("rise: 1", "rise: 0"))
    offset = len(systemd.path(LOG).read_text()) if systemd.path(LOG).exists() else 0
    console = len(systemd.console.read_text())
    try:
        refused = systemd.systemctl("start", "bcd", check=False)
        assert refused.returncode != 0, refused
        wait_for_line(systemd.path(LOG), "/etc/bcd/bcd.yaml:6: defaults.rise: Input should be greater than or equal "
                      "to 1", after=offset)
        wait_for_line(systemd.console, "bcd.service: Main process exited, code=exited, status=2/INVALIDARGUMENT",
                      after=console)
        poll(lambda: systemd.show("bcd", "NRestarts")["NRestarts"] != "0", 20, "systemd to start bcd again")
        systemd.path("/etc/bcd/bcd.yaml").write_text(config(port, "payroll"))  # fixed: the next attempt starts
        poll(lambda: systemd.show("bcd", "SubState")["SubState"] == "running", 30, "bcd to start once fixed")
    finally:
        systemd.systemctl("stop", "bcd", check=False)
        systemd.systemctl("reset-failed", "bcd", check=False)


def test_stop_is_clean_and_quick(bcd: BootedSystemd) -> None:
    begun = time.monotonic()
    bcd.systemctl("stop", "bcd")  # returns once bcd has ended
    took = time.monotonic() - begun
    shown = bcd.show("bcd", "ActiveState", "Result")
    assert (shown["ActiveState"], shown["Result"]) == ("inactive", "success"), shown  # not killed at TimeoutStopSec
    assert took < 5, took  # the unit's comment promises about 5 s at most
    assert log_lines(bcd, "stopped")  # bcd's own last line: it ended itself on SIGTERM


def test_a_stuck_daemon_is_aborted_by_the_watchdog_with_its_stacks_and_restarted(bcd: BootedSystemd) -> None:
    first = bcd.show("bcd", "MainPID", "NRestarts")
    offset, console = len(bcd.path(LOG).read_text()), len(bcd.console.read_text())
    bcd.run("kill", "-STOP", first["MainPID"])  # stuck: no watchdog ping
    wait_for_line(bcd.console, f"bcd.service: Watchdog timeout (limit {WATCHDOG}s)!", after=console)
    # systemd follows its SIGABRT with SIGCONT: faulthandler writes every thread's stack, then bcd aborts
    wait_for_line(bcd.path(LOG), "Fatal Python error: Aborted", after=offset)
    wait_for_line(bcd.path(LOG), 'File "', after=offset)
    wait_for_line(bcd.console, "bcd.service: Main process exited, code=killed, status=6/ABRT", after=console)
    again = poll(lambda: (shown := bcd.show("bcd", "SubState", "MainPID", "NRestarts"))["SubState"] == "running"
                 and shown, 30, "Restart=on-failure to start bcd again")
    assert again["MainPID"] != first["MainPID"]
    assert int(again["NRestarts"]) == int(first["NRestarts"]) + 1
