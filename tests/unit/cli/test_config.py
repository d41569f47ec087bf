"""`bcd check-config` and `bcd schema` through the real command line, on tests/data/configs/*.yaml.

Each invalid fixture names the lines it must produce in leading `# expect: <text>` comments; check-config must
print exactly those problems (one line each, `FILE:LINE: path: message`), exit 2 and never a traceback.
Each command runs once, in this process (`bcd.cli.main` with stdout and stderr captured: a subprocess per
fixture paid ~0.6 s of imports each, minutes on a loaded 2-core machine); `test_in_process_outcome_is_the_real_
command_line` runs a handful of them as real `python -m bcd` subprocesses and requires the very same outcome.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import re
import subprocess
import sys
import typing
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel
from pydantic.dataclasses import is_pydantic_dataclass
from pydantic.fields import FieldInfo

from bcd import cli as bcd_cli
from bcd import config as bcd_config
from bcd.probes.registry import KINDS as PROBE_KINDS

ROOT = Path(__file__).resolve().parents[3]
CONFIGS = ROOT / "tests" / "data" / "configs"
EXAMPLE = ROOT / "config" / "bcd.example.yaml"
GOOD = sorted(CONFIGS.glob("good-*.yaml"))
INVALID = sorted(CONFIGS.glob("invalid-*.yaml"))
INVALID_INCLUDES = sorted(CONFIGS.glob("include/invalid-*.yaml"))  # main files; what they include is beside them

SECRET = "s3cr3t-7f1c9e-do-not-print"
ENVIRONMENT = {
    "BCD_TEST_INSTANCE": "bcd-env",
    "BCD_TEST_SECRET": SECRET,
    "BCD_TEST_SECRET_URL": f"ftp://bcd:{SECRET}@files.dorset.example/",
}
ISSUE_LINE = re.compile(r"^(?P<file>.+?):(?P<line>\d+): ")


def bcd_command(*args: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "bcd", *args)


def _run(command: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    """`command` as a real subprocess, with the fixtures' environment."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("BCD_TEST_")}
    env.update(ENVIRONMENT)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False)


@contextlib.contextmanager
def _fixture_environment() -> Iterator[None]:
    """This process's environment and cwd as `_run` gives its subprocesses, restored afterwards."""
    saved = {key: value for key, value in os.environ.items() if key.startswith("BCD_TEST_")}
    for key in saved:
        del os.environ[key]
    os.environ.update(ENVIRONMENT)
    try:
        with contextlib.chdir(ROOT):
            yield
    finally:
        for key in ENVIRONMENT:
            os.environ.pop(key, None)
        os.environ.update(saved)


def run_in_process(*args: str) -> subprocess.CompletedProcess[str]:
    """`bcd ARGS` through `bcd.cli.main`, as `python -m bcd ARGS` would run it (its exit code, stdout, stderr).
    An exception escapes: it fails the test, as the traceback it would print would."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with _fixture_environment(), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code: int | str | None = bcd_cli.main(list(args))
        except SystemExit as exit_:  # argparse's way out
            code = exit_.code
    assert isinstance(code, int), code
    return subprocess.CompletedProcess(bcd_command(*args), code, stdout.getvalue(), stderr.getvalue())


@cache
def outcome(*args: str) -> subprocess.CompletedProcess[str]:
    """The outcome of `bcd ARGS` (run once per session, in this process)."""
    return run_in_process(*args)


# A handful run for real too: one of each kind of outcome (OK with warnings, invalid, invalid include,
# unreadable, schema), in a pool no wider than the machine.
REAL = [
    ("check-config", str(CONFIGS / "good-full.yaml")),
    ("check-config", str(INVALID[0])),
    ("check-config", str(INVALID_INCLUDES[0])),
    ("check-config", str(CONFIGS / "no-such-file.yaml")),
    ("schema",),
]


@cache
def real_outcomes() -> dict[tuple[str, ...], subprocess.CompletedProcess[str]]:
    with ThreadPoolExecutor(max_workers=min(len(REAL), os.cpu_count() or 2)) as pool:
        return dict(zip(REAL, pool.map(_run, (bcd_command(*args) for args in REAL)), strict=True))


def expectations(path: Path) -> list[str]:
    lines = path.read_bytes().decode("utf-8", errors="replace").splitlines()
    return [line.removeprefix("# expect: ") for line in lines if line.startswith("# expect: ")]


def expected_issues(path: Path, result: subprocess.CompletedProcess[str]) -> list[re.Match[str]]:
    """Asserts check-config exited 2 printing exactly the fixture's `# expect:` lines; returns each line's match."""
    assert result.returncode == 2, result.stdout + result.stderr
    printed = result.stderr.splitlines()
    for expected in expectations(path):
        assert any(expected in line for line in printed), f"missing {expected!r} in:\n{result.stderr}"
    assert len(printed) == len(expectations(path)), result.stderr
    matches = [ISSUE_LINE.match(line) for line in printed]
    for line, match in zip(printed, matches, strict=True):
        assert match is not None, line
    return [match for match in matches if match is not None]


def assert_never_leaks(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr
    assert SECRET not in result.stdout
    assert SECRET not in result.stderr


@pytest.mark.parametrize("args", REAL, ids=lambda args: Path(args[-1]).stem)
def test_in_process_outcome_is_the_real_command_line(args: tuple[str, ...]) -> None:
    real = real_outcomes()[args]
    assert "Traceback" not in real.stderr
    assert (real.returncode, real.stdout, real.stderr) == (outcome(*args).returncode, outcome(*args).stdout,
                                                           outcome(*args).stderr)


def test_fixtures_exist() -> None:
    assert len(GOOD) >= 4
    assert len(INVALID) >= 20
    for path in INVALID:
        assert expectations(path), f"{path.name} has no '# expect:' line"


@pytest.mark.parametrize("path", INVALID, ids=lambda path: path.stem)
def test_invalid_fixture_reports_every_problem(path: Path) -> None:
    result = outcome("check-config", str(path))
    assert_never_leaks(result)
    assert result.stdout == ""
    for match in expected_issues(path, result):
        assert match["file"] == str(path)


@pytest.mark.parametrize("path", INVALID_INCLUDES, ids=lambda path: path.stem)
def test_invalid_includes_report_every_problem_of_every_file(path: Path) -> None:
    result = outcome("check-config", str(path))
    assert_never_leaks(result)
    for match in expected_issues(path, result):
        assert Path(match["file"]).resolve().is_relative_to(path.parent), match[0]


@pytest.mark.parametrize("path", GOOD, ids=lambda path: path.stem)
def test_good_fixture_passes_with_summary(path: Path) -> None:
    result = outcome("check-config", str(path))
    assert_never_leaks(result)
    assert result.returncode == 0, result.stderr
    # only warnings (files missing on this host), each located as FILE:LINE: path: warning: …
    for line in result.stderr.splitlines():
        match = ISSUE_LINE.match(line)
        assert match is not None and match["file"] == str(path) and ": warning: " in line, line
    summary = result.stdout.splitlines()
    assert summary[0] == f"{path}: OK"
    assert summary[-1] == "(* = active site)"
    assert len(summary) <= 24  # one screen


def test_summary_of_the_full_fixture() -> None:
    path = CONFIGS / "good-full.yaml"
    summary = outcome("check-config", str(path)).stdout
    assert "instance bcd-dorset-1, vantage dorset, listen [::1]:9847, state /var/lib/bcd" in summary
    assert "sites (2): dorset, hampshire" in summary
    assert "services (1), probes (6):" in summary
    assert "web/http@15s smtp/tcp@15s dns/dns@15s disk/command@1m broker/mqtt@15s" in summary


def test_summary_shows_effective_intervals() -> None:
    summary = outcome("check-config", str(CONFIGS / "good-overrides.yaml")).stdout
    assert "dorset: slow/command@90s fast/tcp@1s, hampshire*: slow/command@2m" in summary


def test_environment_is_expanded_and_secrets_stay_hidden() -> None:
    path = CONFIGS / "good-env.yaml"
    assert "${BCD_TEST_SECRET}" in path.read_text()
    result = outcome("check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert "instance bcd-env," in result.stdout
    assert_never_leaks(result)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (CONFIGS / "no-such-file.yaml", "cannot read: [Errno 2] No such file or directory"),
        (CONFIGS, "cannot read: [Errno 21] Is a directory"),
    ],
    ids=["missing", "directory"],
)
def test_unreadable_file(path: Path, message: str) -> None:
    result = outcome("check-config", str(path))
    assert_never_leaks(result)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"{path}:0: {message}")
    assert len(result.stderr.splitlines()) == 1


def test_a_file_over_the_size_limit_is_one_located_error(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("w") as out:  # generated here rather than committed: 33 MB
        out.write("sites:\n  dorset: {}\n")
        for _ in range(33):
            out.write("#" * (1024 * 1024 - 1) + "\n")
    result = run_in_process("check-config", str(path))
    assert_never_leaks(result)
    assert result.returncode == 2
    assert result.stderr == f"{path}:1: the file is larger than the limit of 32 MB\n"


def test_thousands_of_errors_print_the_first_fifty_and_a_count(tmp_path: Path) -> None:
    path = tmp_path / "many.yaml"
    path.write_text("sites: {dorset: {}}\nservices:\n" + "".join(
        f"  s{i}: {{active: dorset, bogus: 1, sites: {{dorset: {{probes: [{{name: p, tcp: {{host: h, port: 1}}}}]}}}}}}\n"
        for i in range(5000)))
    result = run_in_process("check-config", str(path))
    assert_never_leaks(result)
    assert result.returncode == 2
    printed = result.stderr.splitlines()
    assert len(printed) == 51
    assert printed[0] == f"{path}:3: services.s0.bogus: unknown key"
    assert printed[49] == f"{path}:52: services.s49.bogus: unknown key"
    assert printed[50] == f"{path}:53: … and 4,950 more errors"


def test_schema_is_json_schema_of_the_config() -> None:
    result = outcome("schema")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert "services" in schema["properties"]
    assert schema["required"] == ["sites"]
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == set(bcd_config.Config.model_fields)
    assert schema["$defs"]["Defaults"]["properties"]["interval"]["type"] == "string"


# -------------------------------------------------------------------------------------------------------------
# config/bcd.example.yaml: valid, and documents every option


def test_example_passes_check_config() -> None:
    result = outcome("check-config", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{EXAMPLE}: OK\n")


def test_example_has_a_schema_hint() -> None:
    assert EXAMPLE.read_text().startswith("# yaml-language-server: $schema=")


def _is_model(value: object) -> bool:
    """A BaseModel, or a pydantic dataclass (the probe specs and the per-service sections)."""
    return isinstance(value, type) and (issubclass(value, BaseModel) or is_pydantic_dataclass(value))


def _fields_of(model: type) -> dict[str, FieldInfo]:
    if issubclass(model, BaseModel):
        return model.model_fields
    fields: dict[str, FieldInfo] = model.__pydantic_fields__  # type: ignore[attr-defined]
    return fields


def _models_in(annotation: object) -> Iterator[type]:
    if _is_model(annotation):
        yield typing.cast(type, annotation)
    for argument in typing.get_args(annotation):
        yield from _models_in(argument)


def model_fields() -> dict[str, set[str]]:
    """Config key -> the models having it: every model reachable from Config (probe specs, runbook steps,
    ...), every model that bcd.config defines, and the spec of every probe kind."""
    models: list[type] = [
        value
        for value in vars(bcd_config.models).values()
        if _is_model(value) and value.__module__ == bcd_config.models.__name__
    ] + [kind.spec for kind in PROBE_KINDS]
    seen: set[type] = set()
    fields: dict[str, set[str]] = {}
    while models:
        model = models.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, field in _fields_of(model).items():
            fields.setdefault(field.alias or name, set()).add(model.__name__)  # the YAML key
            models.extend(_models_in(field.annotation))
    return fields


def yaml_keys(value: object) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from yaml_keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from yaml_keys(item)


def test_model_walk_finds_every_probe_kind() -> None:
    fields = model_fields()
    for kind in bcd_config.models.KINDS:
        assert kind in fields
    for spec_field in ("body_regex", "server_name", "transport", "argv", "password_file"):
        assert spec_field in fields


def test_example_sets_every_option_of_every_model() -> None:
    """Every field of every model is a key in the example (so it is set there and validated)."""
    keys = set(yaml_keys(yaml.safe_load(EXAMPLE.read_text())))
    missing = {name: sorted(models) for name, models in model_fields().items() if name not in keys}
    assert not missing, f"config/bcd.example.yaml lacks these options: {missing}"


def test_example_comments_every_option() -> None:
    """Every option is explained: it is the key of a line right after a comment, or a comment names it."""
    lines = EXAMPLE.read_text().splitlines()
    comments = " ".join(line for line in lines if line.lstrip().startswith("#"))
    explained = set(re.findall(r"[A-Za-z0-9_]+", comments))
    for previous, line in itertools.pairwise(lines):
        match = re.match(r"^\s*(?:- )?([A-Za-z0-9_]+):", line)
        if match and previous.lstrip().startswith("#"):
            explained.add(match[1])
    missing = sorted(name for name in model_fields() if name not in explained)
    assert not missing, f"options without a comment in config/bcd.example.yaml: {missing}"


def test_example_commands_are_monitoring_plugins() -> None:
    config = bcd_config.load(EXAMPLE)
    argv0 = [probe.command.argv[0] for _, _, probe in config.all_probes() if probe.command is not None]
    assert argv0
    plugins = Path("/usr/lib/nagios/plugins")
    for program in argv0:
        assert program.startswith(f"{plugins}/")
        if plugins.is_dir():  # monitoring-plugins-basic installed here: the example must name real plugins
            assert Path(program).is_file(), program
