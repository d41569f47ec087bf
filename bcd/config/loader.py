"""Reading a config file: `load()` and `parse()`, with every problem as `FILE:LINE: path: message`."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bcd.config.includes import Included, Source, merge
from bcd.config.includes import paths as include_paths
from bcd.config.models import Config
from bcd.config.partial import checks_on_what_validated
from bcd.config.yaml_data import MAX_BYTES, Document, LimitError
from bcd.config.yaml_data import read as read_yaml
from bcd.config.yaml_lines import lines_of


@dataclass(frozen=True)
class ConfigIssue:
    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return printable(f"{self.file}:{self.line}: {where}{self.message}")


# control characters (a name with a newline or NUL is refused, and must not split the line that says so)
_ESCAPES = {code: repr(chr(code))[1:-1] for code in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)}


def printable(text: str) -> str:
    """`text` on one line: control characters as Python escapes (a newline as \\n, NUL as \\x00)."""
    return text.translate(_ESCAPES)


class ConfigError(Exception):
    """The configuration cannot be used; `issues` lists the problems found (see `first_issues`)."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        super().__init__("\n".join(str(issue) for issue in issues))
        self.issues = issues


SHOWN_ISSUES = 50  # a file with 20,000 problems gets the first ones and a count, not 20,000 lines
Problem = tuple[tuple[str | int, ...], str]  # where (a path in the data) and what


def first_issues(issues: list[ConfigIssue], ranks: dict[str, int] | None = None) -> list[ConfigIssue]:
    """The first SHOWN_ISSUES issues in file order (files by `ranks`: the main file, then its includes), then
    one line counting the rest (at the next one's line)."""
    ranks = ranks or {}
    issues = sorted(issues, key=lambda issue: (ranks.get(issue.file, 0), issue.line))
    if len(issues) <= SHOWN_ISSUES + 1:
        return issues
    rest = issues[SHOWN_ISSUES]
    more = ConfigIssue(rest.file, rest.line, "", f"… and {len(issues) - SHOWN_ISSUES:,} more errors")
    return [*issues[:SHOWN_ISSUES], more]


_ENV_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def load(path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> Config:
    """Read, expand `${ENV}` references, validate; raise ConfigError listing every problem."""
    name = str(path)
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read(MAX_BYTES + 1)  # no more: a huge file is refused before it is in memory
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue(name, 0, "", f"cannot read: {exc}")]) from None
    return parse(text, name, overrides)


def issues_at(name: str, text: str | None, data: Any, problems: list[Problem]) -> list[ConfigIssue]:
    """Each problem at its line in `text` (which passed yaml_data.read(), giving `data`), all placed in one
    pass over the text."""
    lines = lines_of(text, data, [loc for loc, _ in problems]) if text is not None else [1] * len(problems)
    return [ConfigIssue(name, line, dotted(loc), message) for line, (loc, message) in zip(lines, problems, strict=True)]


def dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)


CLEARER_UP_TO = 1_000_000  # characters: beyond, the pure-Python parser takes seconds to find the same error


def _syntax_error(text: str, exc: yaml.YAMLError) -> yaml.YAMLError:
    """The error of the pure-Python parser when it has one: its messages say more than libyaml's
    ("expected ',' or ']', but got ':'" rather than "did not find expected ',' or ']'"). Only its parser runs
    (composing could recurse or expand aliases past yaml_data's limits), and only on a text of reasonable size."""
    if len(text) > CLEARER_UP_TO:
        return exc
    try:
        for _ in yaml.parse(text, Loader=yaml.SafeLoader):  # a safe loader
            pass
    except yaml.YAMLError as clearer:
        return clearer
    return exc


def _read(text: str, name: str) -> Document:
    try:
        return read_yaml(text)
    except LimitError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark is not None else 1
        raise ConfigError([ConfigIssue(name, line, "", str(exc.problem))]) from None
    except yaml.YAMLError as fast:
        error = _syntax_error(text, fast)
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError([ConfigIssue(name, line, "", f"YAML syntax error: {problem}")]) from None


def parse(text: str, name: str = "<config>", overrides: dict[str, Any] | None = None) -> Config:
    included, issues = _gather(text, name)
    problems: list[Problem] = []
    secrets: set[str] = set()
    data = _expand_env(included.data, (), lambda loc, msg: problems.append((loc, msg)), secrets)
    data.update(overrides or {})
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems.extend(_validation_problems(exc))
        problems.extend(checks_on_what_validated(data, exc, SHOWN_ISSUES))
    if issues or problems:
        raise ConfigError(first_issues([*issues, *_place(included, problems)], _ranks(included)))
    config._secrets = frozenset(value for value in secrets if value)
    config._warnings = tuple(str(issue) for issue in _place(included, [*_command_warnings(config),
                                                                       *_data_lag_warnings(config)]))
    return config


def _gather(text: str, name: str) -> tuple[Included, list[ConfigIssue]]:
    """The main file's data with its includes merged in, and the problems found so far (syntax, keys given
    twice, bad includes), each at its own file's line. Raises ConfigError if the main file cannot be used."""
    document = _read(text, name)
    data = document.data
    if data is None:
        raise ConfigError([ConfigIssue(name, 1, "", "the file is empty")])
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue(name, 1, "", "the top level must be a mapping")])
    main = Source(name, text, data)
    included = Included(dict(data), [main])
    issues = _duplicate_keys(name, document)
    if "include" in data:
        for path in include_paths(main, lambda loc, msg: included.problems.append((main, loc, msg))):
            source, read_issues = _read_included(path)
            included.sources.append(source)
            issues.extend(read_issues)
            merge(included, source)
    for source in included.sources:
        found = [(loc, message) for where, loc, message in included.problems if where is source]
        issues.extend(issues_at(source.name, source.text, source.data, found))
    return included, issues


def _duplicate_keys(name: str, document: Document) -> list[ConfigIssue]:
    return [ConfigIssue(name, twice.line, dotted(twice.path), f"duplicate key (first at line {twice.first_line})")
            for twice in document.duplicates]


def _read_included(path: str) -> tuple[Source, list[ConfigIssue]]:
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read(MAX_BYTES + 1)
        document = _read(text, path)
    except (OSError, UnicodeDecodeError) as exc:
        return Source(path, None, None), [ConfigIssue(path, 0, "", f"cannot read: {exc}")]
    except ConfigError as exc:
        return Source(path, None, None), exc.issues
    return Source(path, text, document.data), _duplicate_keys(path, document)


def _place(included: Included, problems: list[Problem]) -> list[ConfigIssue]:
    """Each problem (a location in the merged data) at its line in the file that wrote it."""
    by_file: dict[str, list[Problem]] = {}
    for problem in problems:
        by_file.setdefault(included.source_of(problem[0]).name, []).append(problem)
    return [issue for source in included.sources if source.name in by_file
            for issue in issues_at(source.name, source.text, source.data, by_file[source.name])]


def _ranks(included: Included) -> dict[str, int]:
    return {source.name: rank for rank, source in enumerate(included.sources)}


def _command_warnings(config: Config) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Files missing on this host (warnings: they may exist where bcd will run; `bcd run` refuses a
    config whose TLS files it cannot load, so a typo never looks like a dead site)."""
    for service_name, site_name, probe in config.all_probes():
        for field_name in ("ca_file", "cert_file", "key_file"):
            path = getattr(probe.spec, field_name, None)
            if path is not None and not os.access(path, os.R_OK):
                where: tuple[str | int, ...] = (
                    "services", service_name, "sites", site_name, "probes", probe.name, probe.kind, field_name)
                yield where, f"warning: cannot read {path} on this host"
    for name, runbook in config.runbooks.items():
        for phase in ("steps", "rollback"):
            for index, step in enumerate(getattr(runbook, phase)):
                if step.command is None:
                    continue
                program = Path(step.command.argv[0])
                loc: tuple[str | int, ...] = ("runbooks", name, phase, index, "command", "argv")
                if not program.exists():
                    yield loc, f"warning: {program} does not exist on this host"


def _data_lag_warnings(config: Config) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """A site that measures its data lag in a service without an rpo: shown, but it holds no failover back."""
    for name, service in config.services.items():
        if config.objectives(name).rpo is not None:
            continue
        for site_name, site in service.sites.items():
            if site.data_lag is not None:
                yield (("services", name, "sites", site_name, "data_lag"),
                       "warning: no rpo (objectives.rpo, or under defaults): the lag is shown but blocks nothing")


def _expand_env(value: Any, loc: tuple[str | int, ...], report: Any, secrets: set[str]) -> Any:
    if isinstance(value, dict):
        return {key: _expand_env(item, (*loc, key), report, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [_expand_env(item, (*loc, index), report, secrets) for index, item in enumerate(value)]
    if isinstance(value, str) and "$" in value:

        def replace(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            variable = match.group(1)
            if variable not in os.environ:
                report(loc, f"environment variable {variable} is not set")
                return ""
            secrets.add(os.environ[variable])
            return os.environ[variable]

        return _ENV_REF.sub(replace, value)
    return value


_MESSAGES = {
    "extra_forbidden": "unknown key",
    "unexpected_keyword_argument": "unknown key",  # a pydantic dataclass's extra_forbidden
    "dataclass_type": "Input should be a valid dictionary or instance of {class_name}",  # as a model says it
}


def _validation_problems(exc: ValidationError) -> Iterator[Problem]:
    for error in exc.errors():
        loc = tuple(error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] in _MESSAGES:
            message = _MESSAGES[error["type"]].format(**error.get("ctx", {}))
        if error["type"] == "cross_check":
            # cross-field errors: one issue per problem, each at its own line (locations relative to the model
            # that raised them: the whole config, or e.g. a service)
            for problem_loc, text in error["ctx"]["problems"]:
                yield loc + tuple(problem_loc), text
            continue
        yield loc, message


def issues_in_file(path: str, problems: list[Problem]) -> list[ConfigIssue]:
    """Problems found after loading (e.g. TLS files that cannot be loaded), located in the file that wrote
    them (the main file or one it includes; the first SHOWN_ISSUES of them, and a count of the rest)."""
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read(MAX_BYTES + 1)
        included, _ = _gather(text, path)
    except (OSError, UnicodeDecodeError, ConfigError):
        return first_issues(issues_at(path, None, None, problems))
    return first_issues(_place(included, problems), _ranks(included))
