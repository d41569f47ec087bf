"""`include:` (a config per council) and check-config reporting every phase's problems in one run."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bcd.config import SHOWN_ISSUES, ConfigError, issues_in_file, json_schema, load

CONFIGS = Path(__file__).resolve().parents[2] / "data" / "configs"
SITES = "sites:\n  dorset: {}\n  hampshire: {}\n"
PAYROLL = """
services:
  payroll:
    active: dorset
    sites:
      dorset: {probes: [{name: web, tcp: {host: 10.1.0.10, port: 443}}]}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(path)
    return [str(issue) for issue in caught.value.issues]


def test_a_config_split_across_includes_equals_the_same_config_in_one_file() -> None:
    split = load(CONFIGS / "good-include.yaml")
    whole = load(CONFIGS / "good-include-whole.yaml")
    assert split.include == ["include/good/*.yaml", "include/good/none-yet-*.yaml"]
    assert split.model_dump(exclude={"include"}) == whole.model_dump(exclude={"include"})
    assert list(split.services) == ["payroll", "library"]  # the files in sorted order: dorset, then hampshire


def test_errors_in_two_included_files_are_reported_together_at_their_lines() -> None:
    found = problems(CONFIGS / "include" / "invalid-two-files.yaml")
    where = CONFIGS / "include" / "two-files"
    assert found == [f"{where}/dorset.yaml:6: services.payroll.colour: unknown key",
                     f"{where}/hampshire.yaml:8: services.library.sites.hampshire.probes.0.interval: "
                     "expected a duration such as 500ms, 10s, 2m, 1h; got 'soon'",
                     f"{where}/hampshire.yaml:10: runbooks.move.steps: Field required"]


def test_a_duplicate_service_across_files_names_both_places() -> None:
    main = CONFIGS / "include" / "invalid-duplicate.yaml"
    assert problems(main) == [f"{CONFIGS}/include/duplicate/payroll.yaml:3: services.payroll: services entry "
                              f"'payroll' is defined twice (also at {main}:7)"]


def test_a_duplicate_between_two_included_files_names_both(tmp_path: Path) -> None:
    main = write(tmp_path / "bcd.yaml", SITES + "include: [conf.d/*.yaml]\n")
    write(tmp_path / "conf.d" / "a.yaml", PAYROLL)
    write(tmp_path / "conf.d" / "b.yaml", "# the same name\n" + PAYROLL)
    assert problems(main) == [f"{tmp_path}/conf.d/b.yaml:4: services.payroll: services entry 'payroll' is defined "
                              f"twice (also at {tmp_path}/conf.d/a.yaml:3)"]


def test_three_phases_are_reported_in_one_run() -> None:
    path = CONFIGS / "invalid-three-phases.yaml"
    assert problems(path) == [
        f"{path}:10: services.payroll.colour: unknown key",
        f"{path}:14: services.payroll.sites.dorset.probes.web: timeout (5s) must be shorter than interval (2s)",
        f"{path}:18: services.payroll.sites.hampshire: site 'hampshire' is not declared under sites"]


def test_an_active_site_that_is_not_the_services_own_does_not_hide_its_other_problems(tmp_path: Path) -> None:
    main = write(tmp_path / "bcd.yaml", SITES + textwrap.dedent("""
        bogus: 1
        services:
          payroll:
            active: kent
            sites: {dorset: {probes: [{name: web, interval: 1s, timeout: 2s, tcp: {host: 10.1.0.10, port: 1}}]}}
        """))
    assert problems(main) == [
        f"{main}:5: bogus: unknown key",
        f"{main}:8: services.payroll.active: active site 'kent' is not one of this service's sites",
        f"{main}:9: services.payroll.sites.dorset.probes.web: timeout (2s) must be shorter than interval (1s)"]


def test_an_invalid_service_does_not_cascade_into_unknown_service_errors(tmp_path: Path) -> None:
    """The cross checks run without the invalid service: no "unknown service 'payroll'" for its dependant."""
    main = write(tmp_path / "bcd.yaml", SITES + textwrap.dedent("""
        services:
          payroll: {active: dorset, sites: {dorset: {probes: []}}}
          library:
            active: hampshire
            depends_on: [payroll]
            failover: {runbook: nowhere}
            sites: {hampshire: {probes: [{name: opac, interval: 1s, timeout: 2s, tcp: {host: 10.2.0.20, port: 1}}]}}
        """))
    assert problems(main) == [
        f"{main}:6: services.payroll.sites.dorset.probes: List should have at least 1 item after validation, not 0",
        f"{main}:10: services.library.failover.runbook: unknown runbook 'nowhere'",
        f"{main}:11: services.library.sites.hampshire.probes.opac: timeout (2s) must be shorter than interval (1s)"]


def test_an_invalid_setting_everything_depends_on_holds_the_cross_checks_back(tmp_path: Path) -> None:
    main = write(tmp_path / "bcd.yaml", SITES + "defaults: {interval: often}\n" + PAYROLL.replace(
        "name: web,", "name: web, timeout: 20s,"))
    assert problems(main) == [f"{main}:4: defaults.interval: expected a duration such as 500ms, 10s, 2m, 1h; "
                              "got 'often'"]


def test_past_the_printed_field_errors_the_cross_checks_wait(tmp_path: Path) -> None:
    """More field errors than are printed: the cross checks (a second validation) are not run for nothing."""
    unknown = "".join(f"bogus{index}: 1\n" for index in range(SHOWN_ISSUES + 1))
    main = write(tmp_path / "bcd.yaml", SITES + unknown + PAYROLL.replace("name: web,", "name: web, timeout: 20s,"))
    assert not any("timeout" in line for line in problems(main))
    main = write(tmp_path / "bcd.yaml", SITES + unknown.split("\n", 1)[1] + PAYROLL.replace(
        "name: web,", "name: web, timeout: 20s,"))
    assert any("timeout (20s) must be shorter" in line for line in problems(main))


def test_secrets_from_the_environment_in_an_included_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BCD_TEST_INCLUDED_TOKEN", "hunter2")
    main = write(tmp_path / "bcd.yaml", SITES + "include: [conf.d/payroll.yaml]\n")
    write(tmp_path / "conf.d" / "payroll.yaml", PAYROLL.replace(
        "tcp: {host: 10.1.0.10, port: 443}",
        'http: {url: "https://10.1.0.10/", headers: {Authorization: "Bearer ${BCD_TEST_INCLUDED_TOKEN}"}}'))
    config = load(main)
    assert config.secrets == frozenset({"hunter2"})
    monkeypatch.delenv("BCD_TEST_INCLUDED_TOKEN")
    assert problems(main) == [f"{tmp_path}/conf.d/payroll.yaml:6: services.payroll.sites.dorset.probes.0.http."
                              "headers.Authorization: environment variable BCD_TEST_INCLUDED_TOKEN is not set"]


def test_a_syntax_error_in_an_included_file_is_reported_with_the_other_files_problems(tmp_path: Path) -> None:
    main = write(tmp_path / "bcd.yaml", SITES + "include: [conf.d/*.yaml]\nbogus: 1\n")
    write(tmp_path / "conf.d" / "a.yaml", "services: {payroll: [\n")
    found = problems(main)
    assert found[0] == f"{main}:5: bogus: unknown key"
    assert found[1].startswith(f"{tmp_path}/conf.d/a.yaml:2: YAML syntax error:")
    assert len(found) == 2


def test_a_file_cannot_include_itself(tmp_path: Path) -> None:
    main = write(tmp_path / "bcd.yaml", SITES + "include: [bcd.yaml, '*.yaml']\n")
    assert problems(main) == [f"{main}:4: include.0: bcd.yaml: a file cannot include itself"]


def test_include_must_be_a_list_of_paths(tmp_path: Path) -> None:
    main = write(tmp_path / "bcd.yaml", SITES + "include: conf.d/*.yaml\n")
    assert problems(main) == [f"{main}:4: include: Input should be a valid list"]


def test_a_glob_outside_the_main_files_directory(tmp_path: Path) -> None:
    main = write(tmp_path / "etc" / "bcd.yaml", SITES + "include: [../shared/*.yaml]\n")
    write(tmp_path / "shared" / "payroll.yaml", PAYROLL)
    assert list(load(main).services) == ["payroll"]


def test_problems_found_after_loading_are_placed_in_the_included_file(tmp_path: Path) -> None:
    main = write(tmp_path / "bcd.yaml", SITES + "include: [conf.d/*.yaml]\n")
    write(tmp_path / "conf.d" / "payroll.yaml", PAYROLL)
    found = issues_in_file(str(main), [(("services", "payroll", "sites", "dorset"), "cannot load"), (("sites",), "x")])
    assert [str(issue) for issue in found] == [f"{main}:1: sites: x",
                                               f"{tmp_path}/conf.d/payroll.yaml:6: services.payroll.sites.dorset: "
                                               "cannot load"]


def test_the_schema_describes_an_included_file() -> None:
    schema = json_schema()
    included = schema["$defs"]["IncludedFile"]
    assert included["additionalProperties"] is False
    assert {"services", "runbooks", "plans"} <= set(included["properties"])
    assert included["properties"]["services"] == schema["properties"]["services"]
    assert schema["properties"]["include"]["type"] == "array"
