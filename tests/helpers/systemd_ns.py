"""systemd itself, booted for a test: the real service manager runs bcd's unit (systemd/bcd.service) as PID 1
of its own pid, mount and cgroup namespaces, so Type=notify, `systemctl reload`, the watchdog, DynamicUser= and
the hardening are systemd's, not a stand-in's (tests/integration/test_systemd.py has the stand-in).

    units = {"bcd.service": unit, "bcd.service.d/test.conf": drop_in}
    with BootedSystemd(staging, units, config) as systemd:   # config: /etc/bcd/bcd.yaml inside
        systemd.systemctl("start", "bcd")

What it changes on this machine, and undoes: one cgroup, `bcd-test-<pid>-<n>` under this process's own in the
cgroup2 hierarchy. Inside, that is the root of the only hierarchy mounted (a cgroup namespace), so systemd runs
in unified mode, makes its slices there and nothing in cgroup v1's hierarchies; `close()` removes it with what
systemd made in it. Nothing else. Inside:
- /run, /tmp and /dev are new: /dev has a few of this machine's nodes bound, and its console is a pty whose
  output the test keeps (`console`);
- /proc/sys and /sys are read-only, as in a container: systemd leaves this machine's kernel settings alone;
  nor may it load kernel modules or set the clock (dropped from its capability bounding set);
- /etc and /var are overlays: their writes (the config, the dynamic user's /var/lib/private/bcd) land in
  `staging`;
- journald is masked: it would write to this machine's kernel log. Units that want sysinit.target would start
  what a boot starts, so the test's drop-in says DefaultDependencies=no.

The bcd it runs is this checkout's, with this venv's packages and this Python, bind-mounted read-only under
/run/bcd-test: the unit's dynamic user cannot reach /root (ProtectHome=, and pyenv's Python lives there).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path
from types import TracebackType

from tests.helpers.prometheus import poll

SYSTEMD = next((path for path in (Path("/lib/systemd/systemd"), Path("/usr/lib/systemd/systemd")) if path.exists()),
               None)
CGROUP = Path("/sys/fs/cgroup")
INSIDE = Path("/run/bcd-test")  # where the checkout, the packages, the Python and bcd's log are, inside
ROOT = Path(__file__).parents[2]
_serial = itertools.count(1)

BOOT = r"""
set -eu
staging=$1 prefix=$2 site=$3 repo=$4 console=$5
for dir in etc var; do
    mkdir -p "$staging/$dir.upper" "$staging/$dir.work"
    mount -t overlay overlay -o "lowerdir=/$dir,upperdir=$staging/$dir.upper,workdir=$staging/$dir.work" "/$dir"
done
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/systemd/system /run/bcd-test/python /run/bcd-test/src/bcd /run/bcd-test/site-packages /run/bcd-test/dev
# the package, not the checkout: a checkout made by `mktemp -d` is root-only (0700), and a bind mount keeps its mode
for pair in "$prefix:python" "$repo/bcd:src/bcd" "$site:site-packages"; do
    mount --bind "${pair%:*}" "/run/bcd-test/${pair##*:}"
    mount -o remount,bind,ro "/run/bcd-test/${pair##*:}"
done
cp -R "$staging/units/." /run/systemd/system/
mkdir -p /etc/bcd
cp "$staging/bcd.yaml" /etc/bcd/bcd.yaml
chmod 644 /etc/bcd/bcd.yaml
# a /dev of its own, with the nodes a service needs bound from this machine's; its console is the test's pty
mount --rbind /dev /run/bcd-test/dev
mount -t tmpfs -o mode=755,nosuid tmpfs /dev
for node in null zero full random urandom tty; do
    touch "/dev/$node"
    mount --bind "/run/bcd-test/dev/$node" "/dev/$node"
done
touch /dev/console
mount --bind "/run/bcd-test$console" /dev/console
umount -R /run/bcd-test/dev
mkdir /dev/shm /dev/pts
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts /dev/pts
ln -s pts/ptmx /dev/ptmx
# this machine's kernel settings and devices are read-only in here (as in a container); cgroup2 alone, at this
# namespace's root (its own directory): systemd runs in unified mode and makes nothing in the v1 hierarchies
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
mount -o remount,bind,ro /sys
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tmpfs -o mode=1777 tmpfs /tmp
# shared within these namespaces (not with this machine's: their peer groups were new at `unshare`), as systemd
# makes / on a machine it boots but not in a container: a service's credentials are mounted in its own namespace
# and reach systemd's by propagation
mount --make-rshared /
# no loading kernel modules, setting the clock or reading its log from in here
exec setpriv --bounding-set=-sys_module,-sys_time,-syslog env -i container=bcd-test PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    "$SYSTEMD" --system --unit=bcd-test.target --log-target=console --show-status=no
"""
# Moves itself into its cgroup, then into new namespaces, where BOOT runs as PID 1 and execs systemd.
ENTER = ('echo $$ > "$CGROUP/cgroup.procs"; exec unshare --pid --fork --kill-child --mount --mount-proc --cgroup '
         '--propagation private /bin/sh "$STAGING/boot.sh" "$STAGING" "$PREFIX" "$SITE" "$REPO" '
         '"$CONSOLE"')
TARGET = "[Unit]\nDescription=what a bcd test starts by hand\nDefaultDependencies=no\n"
# Not started: journald would write to this machine's kernel log (the service's output goes to a file here).
MASKED = ("systemd-journald.service", "systemd-journald.socket", "systemd-journald-dev-log.socket",
          "systemd-journald-audit.socket", "systemd-journal-flush.service")


@functools.cache
def unified() -> Path | None:
    """Where this machine's cgroup2 hierarchy is mounted (alone, or beside v1's as `unified`), if it is."""
    return next((path for path in (CGROUP, CGROUP / "unified") if (path / "cgroup.controllers").exists()), None)


def own_cgroup() -> Path:
    """This process's cgroup2 directory."""
    root = unified()
    assert root is not None
    line = next(line for line in Path("/proc/self/cgroup").read_text().splitlines() if line.startswith("0::"))
    return root / line[3:].lstrip("/")


def unavailable() -> str | None:
    """Why systemd cannot be booted for a test on this machine (None when it can)."""
    if os.geteuid() != 0:
        return "booting systemd in namespaces needs root"
    if SYSTEMD is None:
        return "systemd is not installed (Debian: systemd)"
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        return "unshare and nsenter are not installed (Debian: util-linux)"
    if unified() is None:
        return f"no cgroup2 hierarchy under {CGROUP}"
    return None


class BootedSystemd:
    """systemd as PID 1 of new namespaces, with `units` (file name → text) in /run/systemd/system and `config`
    at /etc/bcd/bcd.yaml; see the module docstring."""

    def __init__(self, staging: Path, units: dict[str, str], config: str) -> None:
        self.staging = staging
        self.cgroup = own_cgroup() / f"bcd-test-{os.getpid()}-{next(_serial)}"
        (staging / "units").mkdir(parents=True)
        for name, text in {**units, "bcd-test.target": TARGET}.items():
            (staging / "units" / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / "units" / name).write_text(text)
        for name in MASKED:
            (staging / "units" / name).symlink_to("/dev/null")
        (staging / "bcd.yaml").write_text(config)
        (staging / "boot.sh").write_text(BOOT)
        self.process: subprocess.Popen[bytes] | None = None
        self._pty = self._terminal = -1
        self.pid = 0  # systemd's, as this machine sees it

    @staticmethod
    def python() -> str:
        """This Python, as the service runs it: its prefix is bind-mounted at INSIDE/python."""
        return str(INSIDE / "python" / Path(os.path.realpath(sys.executable)).relative_to(
            os.path.realpath(sys.base_prefix)))

    def __enter__(self) -> BootedSystemd:
        try:
            self.boot()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def boot(self) -> None:
        self.cgroup.mkdir()
        environment = {**os.environ, "SYSTEMD": str(SYSTEMD), "CGROUP": str(self.cgroup),
                       "STAGING": str(self.staging), "PREFIX": os.path.realpath(sys.base_prefix), "SITE": sysconfig.get_paths()["purelib"],
                       "REPO": str(ROOT), "CONSOLE": self._console()}
        with (self.staging / "boot.log").open("wb") as log:
            self.process = subprocess.Popen(["/bin/sh", "-c", ENTER], env=environment, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT)
        self.pid = poll(self._systemd_pid, 15, "systemd to start in its namespaces")
        poll(self._manager_up, 30, "systemd to finish starting (is-system-running)")

    def _console(self) -> str:
        """A pty for systemd's /dev/console (it logs only to a terminal there), copied to staging/systemd.log by a
        thread; the path of its terminal end."""
        self._pty, terminal = os.openpty()
        self._terminal = terminal
        path = os.ttyname(terminal)

        def copy() -> None:
            # EIO once every end of the terminal is closed
            with (self.staging / "systemd.log").open("ab", buffering=0) as log, contextlib.suppress(OSError):
                while data := os.read(self._pty, 65536):
                    log.write(data)

        threading.Thread(target=copy, name="systemd-console", daemon=True).start()
        return path

    def _systemd_pid(self) -> int | None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"systemd's namespaces ended (exit {self.process.returncode}): {self.log()}")
        try:
            unshare = int(Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()[0])
            return unshare if Path(f"/proc/{unshare}/comm").read_text().strip() == "systemd" else None
        except (FileNotFoundError, IndexError, ValueError):
            return None

    def _manager_up(self) -> bool:
        state = self.systemctl("is-system-running", check=False).stdout.strip()
        if state in {"running", "degraded"}:
            return True
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"systemd ended while starting: {self.log()}")
        return False

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A command inside systemd's namespaces (its mounts, its pids); `check`: RuntimeError with its output if
        it fails."""
        ran = subprocess.run(["nsenter", "-t", str(self.pid), "-m", "-p", *argv], capture_output=True, text=True,
                             timeout=60, check=False)
        if check and ran.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: exit {ran.returncode}: {ran.stderr}{ran.stdout}\n"
                               f"systemd: {self.log()}")
        return ran

    def systemctl(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("systemctl", "--no-pager", *argv, check=check)

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        output = self.systemctl("show", unit, *(f"--property={name}" for name in properties)).stdout
        return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)

    def path(self, inside: str | Path) -> Path:
        """A file as systemd's namespaces see it (through /proc/PID/root)."""
        return Path(f"/proc/{self.pid}/root") / Path(inside).relative_to("/")

    @property
    def console(self) -> Path:
        """systemd's own lines (its console), as they come."""
        return self.staging / "systemd.log"

    def log(self) -> str:
        """What the boot and systemd itself printed (the end of it)."""
        return "\n".join((self.staging / name).read_text(errors="replace")[-3000:]
                         for name in ("boot.log", "systemd.log"))

    def close(self) -> None:
        """End systemd and everything in its namespaces (SIGKILL to their PID 1), then remove its cgroups."""
        if self.process is not None:
            if self.pid:  # unshare then exits, having reaped it
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        if self.cgroup.exists():
            poll(lambda: _removed(self.cgroup), 15, f"{self.cgroup} to be emptied and removed")
        for descriptor in (self._terminal, self._pty):
            if descriptor >= 0:
                os.close(descriptor)
        self._pty = self._terminal = -1


def _removed(cgroup: Path) -> bool:
    """Remove a cgroup and those under it, deepest first; False while one still has processes (ending)."""
    for directory in sorted((p for p in cgroup.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        try:
            directory.rmdir()
        except OSError:
            return False
    try:
        cgroup.rmdir()
    except OSError:
        return False
    return True


def wait_for_line(path: Path, text: str, timeout: float = 20.0, after: int = 0) -> str:
    """The first line of file `path` from offset `after` that contains `text` (waiting for it to be written)."""
    def found() -> str | None:
        try:
            content = path.read_text(errors="replace")[after:]
        except FileNotFoundError:
            return None
        return next((line for line in content.splitlines() if text in line), None)
    return str(poll(found, timeout, f"{text!r} in {path}"))
