"""bcd.config: defaults, effective timing, ${ENV} expansion, errors at the right FILE:LINE, credentials."""

from __future__ import annotations

import socket
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from bcd.config import (
    SHOWN_ISSUES,
    Config,
    ConfigError,
    ConfigIssue,
    credential_path,
    first_issues,
    load,
    parse,
    read_credential,
    split_listen,
)
from bcd.probes.command import CommandSpec
from bcd.probes.tcp import TcpSpec

MINIMAL = "sites:\n  dorset: {}\n"


def issues_of(text: str, name: str = "bcd.yaml") -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(textwrap.dedent(text), name)
    return [str(issue) for issue in caught.value.issues]


def one_probe(
    defaults: dict[str, Any] | None = None,
    service: dict[str, Any] | None = None,
    probe: dict[str, Any] | None = None,
) -> Config:
    data: dict[str, Any] = {
        "sites": {"dorset": {}},
        "services": {
            "payroll": {
                "active": "dorset",
                **(service or {}),
                "sites": {"dorset": {"probes": [{"name": "web", **(probe or {}), "tcp": {"host": "h", "port": 1}}]}},
            }
        },
    }
    if defaults is not None:
        data["defaults"] = defaults
    return parse(yaml.safe_dump(data))


# -------------------------------------------------------------------------------------------------------------
# Defaults


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setattr(socket, "gethostname", lambda: "db1.dorset.example")
    config = parse(MINIMAL)
    assert config.instance == "db1"
    assert config.vantage is None
    assert config.state_dir == "./var"
    assert config.server.listen == "127.0.0.1:9847"
    assert config.server.host_port == ("127.0.0.1", 9847)
    assert config.scheduler.max_concurrency == 1000
    assert (config.defaults.interval, config.defaults.timeout) == (10.0, 3.0)
    assert (config.defaults.rise, config.defaults.fall) == (2, 3)
    assert (config.flapping.high, config.flapping.low) == (30.0, 25.0)
    assert config.sites["dorset"].description == ""
    assert config.services == {}


def test_state_dir_from_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/bcd:/var/lib/bcd-extra")
    assert parse(MINIMAL).state_dir == "/var/lib/bcd"
    assert parse(MINIMAL + "state_dir: /srv/bcd\n").state_dir == "/srv/bcd"


def test_config_is_frozen() -> None:
    config = parse(MINIMAL)
    with pytest.raises(ValidationError):
        config.instance = "other"  # type: ignore[misc]


def test_overrides_win_over_the_file() -> None:
    assert parse(MINIMAL + "vantage: dorset\n", overrides={"vantage": "hampshire"}).vantage == "hampshire"


def test_probe_kind_and_spec() -> None:
    config = parse(
        MINIMAL
        + textwrap.dedent(
            """\
            services:
              payroll:
                active: dorset
                sites:
                  dorset:
                    probes:
                      - {name: ssh, tcp: {host: 10.1.0.10, port: 22}}
                      - {name: disk, command: {argv: [/usr/lib/nagios/plugins/check_dummy, "0"]}}
            """
        )
    )
    (_, _, ssh), (_, _, disk) = config.all_probes()
    assert (ssh.kind, disk.kind) == ("tcp", "command")
    assert ssh.spec == TcpSpec(host="10.1.0.10", port=22)
    assert isinstance(disk.spec, CommandSpec)
    assert disk.spec.argv == ["/usr/lib/nagios/plugins/check_dummy", "0"]


# -------------------------------------------------------------------------------------------------------------
# Effective timing: probe, else service, else defaults


@pytest.mark.parametrize(
    ("defaults", "service", "probe", "expected"),
    [
        (None, None, None, (10.0, 3.0, 2, 3)),
        ({"interval": "30s", "timeout": "5s", "rise": 4, "fall": 6}, None, None, (30.0, 5.0, 4, 6)),
        (None, {"interval": "1m"}, None, (60.0, 3.0, 2, 3)),
        (
            {"interval": "30s", "timeout": "5s", "rise": 4, "fall": 6},
            {"interval": "1m", "timeout": "10s", "rise": 3, "fall": 5},
            None,
            (60.0, 10.0, 3, 5),
        ),
        (
            None,
            {"interval": "1m", "timeout": "10s", "rise": 3},
            {"interval": "5s", "timeout": "500ms"},
            (5.0, 0.5, 3, 3),
        ),
        (None, {"fall": 5}, {"fall": 1}, (10.0, 3.0, 2, 1)),
        ({"interval": "20s"}, {"timeout": "15s"}, {"rise": 7}, (20.0, 15.0, 7, 3)),
        ({"timeout": "1m"}, {"interval": "2m"}, None, (120.0, 60.0, 2, 3)),
    ],
)
def test_effective_timing(
    defaults: dict[str, Any] | None,
    service: dict[str, Any] | None,
    probe: dict[str, Any] | None,
    expected: tuple[float, float, int, int],
) -> None:
    config = one_probe(defaults, service, probe)
    ((service_name, _, web),) = config.all_probes()
    timing = config.timing(service_name, web)
    assert (timing.interval, timing.timeout, timing.rise, timing.fall) == expected


@pytest.mark.parametrize(
    ("defaults", "service", "probe", "message"),
    [
        (None, {"timeout": "15s"}, None, "timeout (15s) must be shorter than interval (10s)"),
        (None, None, {"timeout": "10s"}, "timeout (10s) must be shorter than interval (10s)"),
        ({"interval": "1s"}, None, None, "timeout (3s) must be shorter than interval (1s)"),
        (
            None,
            {"interval": "1m", "timeout": "30s"},
            {"interval": "30s"},
            "timeout (30s) must be shorter than interval (30s)",
        ),
        ({"timeout": "0.5s"}, None, {"interval": "500ms"}, "timeout (0.5s) must be shorter than interval (0.5s)"),
    ],
)
def test_timeout_must_be_shorter_than_the_effective_interval(
    defaults: dict[str, Any] | None, service: dict[str, Any] | None, probe: dict[str, Any] | None, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        one_probe(defaults, service, probe)
    (issue,) = caught.value.issues
    assert issue.path == "services.payroll.sites.dorset.probes.web"
    assert issue.message == message


def test_a_probe_interval_can_make_a_long_service_timeout_fit() -> None:
    one_probe(None, {"timeout": "15s"}, {"interval": "20s"})  # no error


# -------------------------------------------------------------------------------------------------------------
# ${ENV} expansion


def test_env_references_are_expanded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BCD_TEST_A", "alpha")
    monkeypatch.setenv("BCD_TEST_B", "beta")
    monkeypatch.setenv("BCD_TEST_INTERVAL", "30s")
    config = parse(
        textwrap.dedent(
            """\
            instance: ${BCD_TEST_A}
            sites:
              dorset: {description: "${BCD_TEST_A}-${BCD_TEST_B}"}
            defaults: {interval: "${BCD_TEST_INTERVAL}"}
            services:
              payroll:
                active: dorset
                description: "$$5, $${BCD_TEST_A}, $$${BCD_TEST_B}, $HOME, ${not closed, cost $5"
                labels: {"${BCD_TEST_A}": "${BCD_TEST_B}", port: "8080"}
                sites:
                  dorset:
                    probes:
                      - name: web
                        http:
                          url: https://${BCD_TEST_A}.dorset.example/
                          headers: {Authorization: "Bearer ${BCD_TEST_B}"}
            """
        )
    )
    assert config.instance == "alpha"
    assert config.sites["dorset"].description == "alpha-beta"
    assert config.defaults.interval == 30.0  # expanded before validation
    service = config.services["payroll"]
    assert service.description == "$5, ${BCD_TEST_A}, $beta, $HOME, ${not closed, cost $5"
    assert service.labels == {"${BCD_TEST_A}": "beta", "port": "8080"}  # keys are not expanded
    (_, _, web), *_ = config.all_probes()
    assert web.http is not None
    assert web.http.url == "https://alpha.dorset.example/"
    assert web.http.headers == {"Authorization": "Bearer beta"}


def test_values_from_the_environment_are_known_as_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BCD_TEST_TOKEN", "hunter2")
    monkeypatch.setenv("BCD_TEST_EMPTY", "")
    config = parse(MINIMAL + 'vantage: "dorset${BCD_TEST_EMPTY}"\ninstance: "${BCD_TEST_TOKEN}"\n')
    assert config.secrets == frozenset({"hunter2"})
    assert parse(MINIMAL).secrets == frozenset()


def test_missing_env_variables_are_errors_at_their_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BCD_TEST_UNSET", raising=False)
    monkeypatch.delenv("BCD_TEST_ALSO_UNSET", raising=False)
    assert issues_of(
        """\
        sites:
          dorset: {}
        services:
          payroll:
            active: dorset
            sites:
              dorset:
                probes:
                  - name: check
                    command:
                      argv:
                        - /usr/lib/nagios/plugins/check_dummy
                        - "${BCD_TEST_UNSET}"
                      env: {TOKEN: "${BCD_TEST_ALSO_UNSET}"}
        """
    ) == [
        "bcd.yaml:13: services.payroll.sites.dorset.probes.0.command.argv.1: "
        "environment variable BCD_TEST_UNSET is not set",
        "bcd.yaml:14: services.payroll.sites.dorset.probes.0.command.env.TOKEN: "
        "environment variable BCD_TEST_ALSO_UNSET is not set",
    ]


# -------------------------------------------------------------------------------------------------------------
# Errors name the file, the line and the path


def test_field_errors_point_at_their_lines() -> None:
    assert issues_of(
        """\
        instance: bcd-1
        sites:
          dorset: {}
          hampshire: {}
        defaults:
          interval: soon
        services:
          payroll:
            active: dorset
            sites:
              dorset:
                probes:
                  - name: web
                    http:
                      url: https://payroll.dorset.example/
                      methd: GET
                  - name: ssh
                    tcp: {host: 10.1.0.10, port: 0}
        """
    ) == [
        "bcd.yaml:6: defaults.interval: expected a duration such as 500ms, 10s, 2m, 1h; got 'soon'",
        "bcd.yaml:16: services.payroll.sites.dorset.probes.0.http.methd: unknown key",
        "bcd.yaml:18: services.payroll.sites.dorset.probes.1.tcp.port: Input should be greater than or equal to 1",
    ]


def test_cross_field_errors_point_at_their_lines() -> None:
    assert issues_of(
        """\
        sites:
          dorset: {}
        services:
          payroll:
            active: dorset
            sites:
              dorset:
                probes:
                  - name: fine
                    tcp: {host: 10.1.0.10, port: 22}
                  - name: slow
                    timeout: 10s
                    tcp: {host: 10.1.0.10, port: 22}
              hampshire:
                probes:
                  - name: web
                    tcp: {host: 10.2.0.10, port: 443}
        """
    ) == [
        "bcd.yaml:11: services.payroll.sites.dorset.probes.slow: timeout (10s) must be shorter than interval (10s)",
        "bcd.yaml:14: services.payroll.sites.hampshire: site 'hampshire' is not declared under sites",
    ]


def test_names_with_dots_and_digits_still_find_their_lines() -> None:
    assert issues_of(
        """\
        sites:
          dorset: {}
        services:
          www.example:
            active: dorset
            sites:
              dorset:
                probes:
                  - name: "1"
                    tcp: {host: 10.1.0.10, port: 80}
                  - name: "0"
                    timeout: 1m
                    tcp: {host: 10.1.0.10, port: 80}
        """
    ) == [
        "bcd.yaml:11: services.www.example.sites.dorset.probes.0: timeout (60s) must be shorter than interval (10s)",
    ]


def test_env_and_validation_errors_come_in_line_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BCD_TEST_UNSET", raising=False)
    assert issues_of("sites: {}\ninstance: ${BCD_TEST_UNSET}\nbogus: 1\n") == [
        "bcd.yaml:1: sites: Dictionary should have at least 1 item after validation, not 0",
        "bcd.yaml:2: instance: environment variable BCD_TEST_UNSET is not set",
        "bcd.yaml:2: instance: String should match pattern '^[A-Za-z0-9][A-Za-z0-9_.-]*$'",
        "bcd.yaml:3: bogus: unknown key",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "bcd.yaml:1: the file is empty"),
        ("# only a comment\n", "bcd.yaml:1: the file is empty"),
        ("- sites: {}\n", "bcd.yaml:1: the top level must be a mapping"),
        ("just a string\n", "bcd.yaml:1: the top level must be a mapping"),
        ("sites:\n  dorset: {}\n  hampshire: [\n", "bcd.yaml:4: YAML syntax error: expected the node content"),
        ("sites: {}\n---\nsites: {}\n", "bcd.yaml:2: YAML syntax error: but found another document"),
        ("\n# comment\ninstance: bcd-1\n", "bcd.yaml:3: sites: Field required"),
    ],
)
def test_whole_file_problems(text: str, expected: str) -> None:
    (issue,) = issues_of(text)
    assert issue.startswith(expected)


def test_load_reports_an_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError) as caught:
        load(path)
    (issue,) = caught.value.issues
    assert (issue.file, issue.line, issue.path) == (str(path), 0, "")
    assert issue.message.startswith("cannot read: [Errno 2] No such file or directory")


def test_load_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "bcd.yaml"
    path.write_text(MINIMAL + "instance: from-file\n")
    assert load(path).instance == "from-file"
    assert load(str(path)).instance == "from-file"


def test_issue_and_error_text() -> None:
    issues = [ConfigIssue("a.yaml", 3, "defaults.rise", "too small"), ConfigIssue("a.yaml", 1, "", "empty")]
    assert str(issues[0]) == "a.yaml:3: defaults.rise: too small"
    assert str(issues[1]) == "a.yaml:1: empty"
    error = ConfigError(issues)
    assert error.issues == issues
    assert str(error) == "a.yaml:3: defaults.rise: too small\na.yaml:1: empty"


def test_control_characters_are_escaped_in_every_part_of_an_issue() -> None:
    issue = ConfigIssue("a\nb.yaml", 3, "sites.dor\nset", "bad name 'pay\x00roll'\u2028")
    assert str(issue) == "a\\nb.yaml:3: sites.dor\\nset: bad name 'pay\\x00roll'\\u2028"
    assert "\n" not in str(ConfigError([issue, issue])).split("\n")[0]


def test_names_with_a_newline_or_nul_are_refused_on_one_line_each() -> None:
    printed = issues_of(
        """\
        sites:
          "dor\\nset": {}
          "a\\0b": {}
        """
    )
    assert printed == [
        "bcd.yaml:2: sites.dor\\nset.[key]: String should match pattern '^[A-Za-z0-9][A-Za-z0-9_.-]*$'",
        "bcd.yaml:3: sites.a\\x00b.[key]: String should match pattern '^[A-Za-z0-9][A-Za-z0-9_.-]*$'",
    ]


def test_many_errors_show_the_first_ones_in_file_order_and_count_the_rest() -> None:
    services = "".join(f"  s{i}: {{active: dorset, bogus: 1, sites: {{dorset: {{probes: [{{name: p, tcp: {{host: h, port: 1}}}}]}}}}}}\n"
                       for i in range(SHOWN_ISSUES + 30))
    printed = issues_of(MINIMAL + "services:\n" + services)
    assert len(printed) == SHOWN_ISSUES + 1
    assert printed[:2] == ["bcd.yaml:4: services.s0.bogus: unknown key", "bcd.yaml:5: services.s1.bogus: unknown key"]
    assert printed[-2] == f"bcd.yaml:{3 + SHOWN_ISSUES}: services.s{SHOWN_ISSUES - 1}.bogus: unknown key"
    assert printed[-1] == f"bcd.yaml:{4 + SHOWN_ISSUES}: … and 30 more errors"


def test_one_more_error_than_shown_is_shown_rather_than_counted() -> None:
    issues = [ConfigIssue("a.yaml", line, "", "bad") for line in range(SHOWN_ISSUES + 1, 0, -1)]
    assert first_issues(issues) == sorted(issues, key=lambda issue: issue.line)


def test_duplicate_keys_are_errors_naming_both_lines() -> None:
    printed = issues_of(
        """\
        sites:
          dorset: {}
        services:
          payroll:
            active: dorset
            sites: {dorset: {probes: [{name: web, tcp: {host: h, port: 1}}]}}
          payroll:
            active: dorset
            active: dorset
            sites: {dorset: {probes: [{name: web, tcp: {host: h, port: 1}}]}}
        """
    )
    assert printed == [
        "bcd.yaml:7: services.payroll: duplicate key (first at line 4)",
        "bcd.yaml:9: services.payroll.active: duplicate key (first at line 8)",
    ]


def test_errors_under_a_duplicated_key_point_at_the_copy_that_counts() -> None:
    printed = issues_of(
        """\
        sites:
          dorset: {}
        defaults: {rise: 1}
        defaults:
          rise: 0
        """
    )
    assert printed == [
        "bcd.yaml:4: defaults: duplicate key (first at line 3)",
        "bcd.yaml:5: defaults.rise: Input should be greater than or equal to 1",
    ]


@pytest.mark.parametrize(("text", "expected"), [
    ("sites: {dorset: {}}\nservices:\n  payroll:\n    labels: &x [*x]\n",
     "bcd.yaml:4: alias *x refers to a collection that contains it"),
    ("sites: {dorset: {}}\nlabels: " + "[" * 900 + "]" * 900 + "\n", "bcd.yaml:2: collections nested deeper than 64 levels"),
])
def test_limits_are_errors_at_their_line(text: str, expected: str) -> None:
    assert issues_of(text) == [expected]


def test_a_file_over_the_size_limit_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "bcd.yaml"
    with path.open("w") as out:
        out.write(MINIMAL)
        for _ in range(33):
            out.write("#" * (1024 * 1024 - 1) + "\n")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert [str(issue) for issue in caught.value.issues] == [
        f"{path}:1: the file is larger than the limit of 32 MB"]


# -------------------------------------------------------------------------------------------------------------
# listen addresses


@pytest.mark.parametrize(
    ("listen", "host_port"),
    [
        ("127.0.0.1:9847", ("127.0.0.1", 9847)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[::1]:9847", ("::1", 9847)),
        ("[::]:65535", ("::", 65535)),
        ("bcd.dorset.example:80", ("bcd.dorset.example", 80)),
    ],
)
def test_split_listen(listen: str, host_port: tuple[str, int]) -> None:
    assert split_listen(listen) == host_port
    assert parse(MINIMAL + f'server: {{listen: "{listen}"}}\n').server.host_port == host_port


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ("localhost", "listen must be host:port or [ipv6]:port, got 'localhost'"),
        (":9847", "listen must be host:port"),
        ("::1:9847", "listen must be host:port"),
        ("[::1]", "listen must be host:port"),
        ("127.0.0.1:http", "listen must be host:port"),
        ("127.0.0.1:65536", "port 65536 out of range"),
    ],
)
def test_split_listen_rejects(listen: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        split_listen(listen)
    (issue,) = issues_of(MINIMAL + f'server:\n  listen: "{listen}"\n')
    assert issue.startswith(f"bcd.yaml:4: server.listen: {message}")


# -------------------------------------------------------------------------------------------------------------
# Credentials (systemd LoadCredential=)


def test_credential_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert credential_path("mqtt-password") == tmp_path / "mqtt-password"
    assert credential_path("tls/client.key") == tmp_path / "tls" / "client.key"
    assert credential_path("/etc/bcd/mqtt-password") == Path("/etc/bcd/mqtt-password")


def test_credential_path_without_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert credential_path("mqtt-password") == Path("mqtt-password")


def test_read_credential(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    (tmp_path / "mqtt-password").write_text("s3cret\n")
    assert read_credential("mqtt-password") == "s3cret"
    with pytest.raises(FileNotFoundError):
        read_credential("absent")


def test_dependencies_must_name_services_and_must_not_loop() -> None:
    probes = "sites: {dorset: {probes: [{name: t, tcp: {host: h, port: 1}}]}}"
    assert issues_of(
        f"""\
        sites:
          dorset: {{}}
        services:
          directory:
            active: dorset
            depends_on: [payroll]
            {probes}
          sql:
            active: dorset
            depends_on: [directory, nosuch]
            {probes}
          payroll:
            active: dorset
            depends_on:
              - sql
            {probes}
        """
    ) == [
        "bcd.yaml:6: services.directory.depends_on: dependency cycle: directory -> payroll -> sql -> directory",
        "bcd.yaml:10: services.sql.depends_on: unknown service 'nosuch'",
    ]


def test_dependencies_are_kept_in_the_config() -> None:
    config = one_probe(service={"depends_on": []})
    assert config.services["payroll"].depends_on == []


def test_objectives_fall_back_one_by_one_to_the_defaults() -> None:
    config = one_probe(defaults={"objectives": {"rto": "30m", "rpo": "5m"}}, service={"objectives": {"rto": "1h"}})
    assert (config.objectives("payroll").rto, config.objectives("payroll").rpo) == (3600.0, 300.0)
    assert (one_probe().objectives("payroll").rto, one_probe().objectives("payroll").rpo) == (None, None)
    assert issues_of("sites: {dorset: {}}\ndefaults:\n  objectives: {rto: soon}\n")[0].startswith(
        "bcd.yaml:3: defaults.objectives.rto:")


# -------------------------------------------------------------------------------------------------------------
# fast_interval (fast confirmation) and bursts


@pytest.mark.parametrize(
    ("defaults", "service", "probe", "expected"),
    [
        (None, None, None, 3.5),  # timeout 3s + 500ms
        ({"timeout": "200ms"}, None, None, 1.0),  # at least 1s
        (None, {"interval": "2s", "timeout": "1800ms"}, None, 2.0),  # never longer than the interval: off
        ({"fast_interval": "5s"}, None, None, 5.0),
        ({"fast_interval": "5s"}, {"fast_interval": "4s"}, None, 4.0),
        ({"fast_interval": "5s"}, {"fast_interval": "4s"}, {"fast_interval": "10s"}, 10.0),  # = interval: off
    ],
)
def test_effective_fast_interval(
    defaults: dict[str, Any] | None, service: dict[str, Any] | None, probe: dict[str, Any] | None, expected: float
) -> None:
    config = one_probe(defaults, service, probe)
    ((service_name, _, web),) = config.all_probes()
    assert config.timing(service_name, web).fast_interval == expected


def test_fast_interval_errors_point_at_where_it_is_set() -> None:
    assert issues_of(
        """\
        sites:
          dorset: {}
        defaults:
          fast_interval: 2s
        services:
          payroll:
            active: dorset
            timeout: 1s
            sites:
              dorset:
                probes:
                  - name: web
                    tcp: {host: 10.1.0.10, port: 22}
                  - name: db
                    fast_interval: 3s
                    tcp: {host: 10.1.0.10, port: 5432}
                  - name: slow
                    fast_interval: 11s
                    tcp: {host: 10.1.0.10, port: 5432}
          intranet:
            active: dorset
            sites:
              dorset:
                probes:
                  - name: a
                    tcp: {host: 10.1.0.11, port: 443}
                  - name: b
                    tcp: {host: 10.1.0.11, port: 80}
        """
    ) == [
        "bcd.yaml:4: defaults.fast_interval: fast_interval (2s) must be longer than the timeout (3s of intranet/dorset/a)",
        "bcd.yaml:18: services.payroll.sites.dorset.probes.slow.fast_interval: fast_interval (11s) must not exceed the "
        "interval (10s of payroll/dorset/slow; equal to it turns fast confirmation off)",
    ]


def test_a_fast_interval_equal_to_the_timeout_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        one_probe(None, None, {"timeout": "1s", "fast_interval": "1s"})
    (issue,) = caught.value.issues
    assert issue.path == "services.payroll.sites.dorset.probes.web.fast_interval"
    assert issue.message == "fast_interval (1s) must be longer than the timeout (1s of payroll/dorset/web)"


def test_burst_rules_come_from_the_scheduler_section_and_the_defaults() -> None:
    config = parse("sites: {dorset: {}}\ndefaults: {interval: 20s}\nscheduler: {burst_failures: 3, burst_window: 5s}\n")
    assert (config.bursts.failures, config.bursts.window, config.bursts.gap) == (3, 5.0, 20.0)
    assert parse(MINIMAL).bursts.failures == 2


def test_fields_left_empty_share_one_empty_object_and_given_ones_are_kept() -> None:
    # pydantic copies a mutable default for every instance: 40,000 empty dicts at 20,000 http probes
    config = parse(textwrap.dedent("""\
        sites: {dorset: {}}
        services:
          payroll:
            active: dorset
            labels: {owner: dorset-cc}
            sites: {dorset: {probes: [{name: web, http: {url: 'http://127.0.0.1/', headers: {X-A: b}}}]}}
          care:
            active: dorset
            depends_on: [payroll]
            sites: {dorset: {probes: [{name: web, http: {url: 'http://127.0.0.1/'}}]}}
          files:
            active: dorset
            sites: {dorset: {probes: [{name: web, http: {url: 'http://127.0.0.1/'}}]}}
        """))
    payroll, care, files = (config.services[name] for name in ("payroll", "care", "files"))
    given, left, other = (service.sites["dorset"].probes[0].spec for service in (payroll, care, files))
    assert given.headers == {"X-A": "b"} and payroll.labels == {"owner": "dorset-cc"}
    assert care.depends_on == ["payroll"] and payroll.depends_on == [] and payroll.depends_on is files.depends_on
    assert left.headers == {} and left.headers is other.headers and left.json_values is other.json_values
    assert care.labels == {} and care.labels is files.labels
