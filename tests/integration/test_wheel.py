"""The wheel works on its own. It is built from this checkout as a release is (`python -m build`: the sdist,
then the wheel from the unpacked sdist, so both must carry what bcd needs), passes `twine check`, and is
installed into a fresh venv whose only bcd is that wheel; every command runs from an empty directory.

The venv gets the dependencies without a network: a `.pth` line puts the project venv's site-packages on its
path *after* its own (a path listed in a `.pth` file is not scanned for `.pth` files, so the editable
install's hook that points at this checkout never runs there).
"""

from __future__ import annotations

import asyncio
import filecmp
import os
import signal
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

import aiohttp
import pytest

import bcd
from bcd import files
from tests.helpers.daemon import free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def clean_env() -> dict[str, str]:
    """The environment without anything that would put the checkout on the path or configure bcd."""
    return {key: value for key, value in os.environ.items()
            if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV") and not key.startswith("BCD_")}


def run(*command: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(part) for part in command], capture_output=True, text=True, cwd=cwd,
                          env=clean_env(), timeout=300, check=False)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    built = run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT)
    assert built.returncode == 0, built.stdout + built.stderr
    return out


@pytest.fixture(scope="module")
def venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("venv")
    assert run(sys.executable, "-m", "venv", "--without-pip", home).returncode == 0
    python = home / "bin" / "python"
    purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    ours = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))  # where aiohttp & co. are
    (Path(purelib) / "bcd-test-dependencies.pth").write_text("".join(f"{path}\n" for path in ours))
    [wheel] = dist.glob("bcd-*.whl")
    installed = run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps",
                    "--no-index", "--disable-pip-version-check", wheel)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return home


def test_twine_check_passes(dist: Path) -> None:
    checked = run(sys.executable, "-m", "twine", "check", "--strict", *sorted(dist.iterdir()))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert sorted(path.suffix for path in dist.iterdir()) == [".gz", ".whl"]


def test_the_wheel_carries_the_compiled_hashing_and_the_sdist_its_source(dist: Path, venv: Path,
                                                                          tmp_path: Path) -> None:
    hashing = run(venv / "bin" / "python", "-c", "from bcd.journal import ledger; print(ledger.HASHING)", cwd=tmp_path)
    assert hashing.stdout.strip() == "compiled", hashing.stdout + hashing.stderr
    [sdist] = dist.glob("bcd-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {member.name.split("/", 1)[1] for member in archive.getmembers() if "/" in member.name}
    assert {"setup.py", "bcd/journal/_chain.c"} <= names


def test_the_sdist_carries_every_shipped_file_as_a_regular_file(dist: Path) -> None:
    [sdist] = dist.glob("bcd-*.tar.gz")
    with tarfile.open(sdist) as archive:
        members = {member.name.split("/", 1)[1]: member for member in archive.getmembers() if "/" in member.name}
    for kind in files.KINDS:
        if files.path(kind).is_file():
            member = members.get(f"bcd/data/{files.KINDS[kind]}")
            assert member is not None and member.isfile(), kind


def test_bcd_runs_from_the_wheel_and_prints_where_its_files_are(venv: Path, tmp_path: Path) -> None:
    where = run(venv / "bin" / "python", "-c", "import bcd; print(bcd.__file__)", cwd=tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout + where.stderr
    version = run(venv / "bin" / "bcd", "--version", cwd=tmp_path)
    assert (version.returncode, version.stdout.strip()) == (0, f"bcd {bcd.__version__}")

    listed = run(venv / "bin" / "bcd", "files", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    lines = dict(line.split(" ", 1) for line in listed.stdout.splitlines())
    assert list(lines) == list(files.KINDS)
    for kind, printed in lines.items():
        path = Path(printed)
        assert path.is_relative_to(venv) and path.exists(), (kind, printed)
        if path.is_file():  # the very file of the checkout, byte for byte
            assert filecmp.cmp(path, ROOT / files.KINDS[kind], shallow=False), kind
        else:
            assert sorted(p.name for p in path.rglob("*")) == sorted(
                p.name for p in (ROOT / files.KINDS[kind]).rglob("*")), kind


def test_the_packaged_example_config_passes_check_config(venv: Path, tmp_path: Path) -> None:
    listed = run(venv / "bin" / "bcd", "files", cwd=tmp_path).stdout.splitlines()
    example = dict(line.split(" ", 1) for line in listed)["config-example"]
    checked = run(venv / "bin" / "bcd", "check-config", example, cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith(f"{example}: OK")


async def test_the_demo_runs_from_the_wheel_and_stops_on_ctrl_c(venv: Path, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    process = await asyncio.create_subprocess_exec(
        venv / "bin" / "bcd", "demo", "--listen", url.removeprefix("http://"), "--fail-after", "600",
        cwd=tmp_path, env=clean_env(), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(60):
            while not any('"event": "started"' in line for line in seen):
                line = (await process.stdout.readline()).decode()
                if not line:
                    break
                seen.append(line)
            if "cannot start the simulated estate" in "".join(seen) and "in use" in "".join(seen):
                pytest.skip("the demo estate's fixed ports (19100-19204) are taken: is another demo running?")
            assert f"readiness    {url}/readyz" in "".join(seen), "".join(seen)
            async with aiohttp.ClientSession() as session:
                while True:  # ready once every probe of the demo estate has run once
                    async with session.get(f"{url}/readyz") as response:
                        if response.status == 200:
                            break
                    await asyncio.sleep(0.2)
                for page in ("/", "/api/v1/openapi.json"):  # the status page's files come from the wheel too
                    async with session.get(f"{url}{page}") as response:
                        assert response.status == 200, page
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            rest, _ = await process.communicate()
    text = "".join(seen) + rest.decode()
    assert process.returncode == 0, text
    assert '"event": "stopped"' in text
    assert "Traceback" not in text
