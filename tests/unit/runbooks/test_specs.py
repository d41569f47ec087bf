"""Runbook config models: templates checked at load, exactly one kind per step, strict keys and values."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from bcd.runbooks.specs import Runbook, Step, Transfer
from bcd.runbooks.steps.command import CommandStep
from bcd.runbooks.steps.http import HttpStep
from bcd.runbooks.templates import RENDERED, TEMPLATE_NAMES, check_templates, template_fields


def errors(model: Any, data: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        TypeAdapter(model).validate_python(data)  # a model, or a pydantic dataclass (Transfer)
    return str(caught.value)


def test_template_names_are_the_documented_ones() -> None:
    assert frozenset({"service", "from_site", "to_site", "run_id", "trigger", "fence_token", "plan",
                      "plan_run"}) == TEMPLATE_NAMES


@pytest.mark.parametrize(
    ("text", "names"),
    [("{service}/{to_site}", ["service", "to_site"]), ("plain", []), ("{{literal}}", []), ("{{{run_id}}}", ["run_id"])],
)
def test_template_fields(text: str, names: list[str]) -> None:
    assert list(template_fields(text)) == names


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{nope}", "unknown template {nope}"),
        (["ok {service}", "{to_site} {nope}"], "unknown template {nope}"),
        ({"a": {"b": ["{nope}"]}}, "unknown template {nope}"),
        ("{service!r}", "invalid template {service}"),
        ("{service:>10}", "invalid template {service}"),
        ("{0}", "invalid template {0}"),
        ("{}", "invalid template {}"),
        ("{a.b}", "invalid template {a.b}"),
        ("{unclosed", "expected '}'"),
        ("stray }", "Single '}'"),
    ],
)
def test_check_templates_rejects(value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}").replace(".", r"\.")):
        check_templates(value)


def test_unknown_template_error_lists_the_known_ones() -> None:
    with pytest.raises(ValueError) as caught:
        check_templates("{nope}")
    assert str(caught.value) == (
        "unknown template {nope}; known: {fence_token}, {from_site}, {plan}, {plan_run}, {run_id}, {service}, "
        "{to_site}, {trigger}"
    )


@pytest.mark.parametrize(
    "step",
    [
        {"name": "s", "http": {"url": "http://x/{nope}"}},
        {"name": "s", "http": {"url": "http://x/", "headers": {"X": "{nope}"}}},
        {"name": "s", "http": {"url": "http://x/", "json": {"deep": ["{nope}"]}}},
        {"name": "s", "command": {"argv": ["/bin/true", "{nope}"]}},
        {"name": "s", "command": {"argv": ["/bin/true"], "env": {"X": "{nope}"}}},
        {"name": "s", "mqtt_publish": {"topic": "t/{nope}"}},
        {"name": "s", "wait_healthy": {"site": "{nope}"}},
    ],
)
def test_unknown_templates_in_any_templated_step_field_are_rejected(step: dict[str, Any]) -> None:
    assert "unknown template {nope}" in errors(Step, step)


def test_runbook_description_templates_are_checked() -> None:
    assert "unknown template {nope}" in errors(Runbook, {"description": "{nope}", "steps": [{"name": "s", "sleep": {"duration": "1s"}}]})


def test_rendered_specs_keep_literal_braces() -> None:
    rendered = {"url": "http://x/", "body": '{"service": "payroll"}'}
    assert "invalid template" in errors(HttpStep, rendered)  # as config: braces are templates
    assert HttpStep.model_validate(rendered, context=RENDERED).body == '{"service": "payroll"}'


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"name": "s"}, "a step needs exactly one of http, command, mqtt_publish, wait_healthy, sleep, approval; got 0"),
        ({"name": "s", "sleep": {"duration": "1s"}, "approval": {}}, "got 2"),
        ({"name": "s", "command": {"argv": ["fence"]}}, "argv[0] must be an absolute path, got 'fence'"),
        ({"name": "s", "command": {"argv": ["./fence"]}}, "argv[0] must be an absolute path"),
        ({"name": "s", "command": {"argv": []}}, "at least 1 item"),
        ({"name": "s", "http": {"url": "ftp://x"}}, "should match pattern"),
        ({"name": "s", "http": {"url": "http://x", "method": "BREW"}}, "'GET', 'POST', 'PUT', 'PATCH' or 'DELETE'"),
        ({"name": "s", "http": {"url": "http://x", "expect_status": [99]}}, "greater than or equal to 100"),
        ({"name": "s", "http": {"url": "http://x", "bogus": 1}}, "Extra inputs are not permitted"),
        ({"name": "s", "sleep": {"duration": "soon"}}, "expected a duration"),
        ({"name": "s", "sleep": {"duration": "1s"}, "retry": {"attempts": 0}}, "greater than or equal to 1"),
        ({"name": "s", "sleep": {"duration": "1s"}, "retry": {"attempts": 21}}, "less than or equal to 20"),
        ({"name": "s", "sleep": {"duration": "1s"}, "on_failure": "retry"}, "'abort' or 'continue'"),
        ({"name": "", "sleep": {"duration": "1s"}}, "at least 1 character"),
        ({"name": "s", "mqtt_publish": {"topic": "t", "qos": 3}}, "Input should be 0, 1 or 2"),
        ({"name": "s", "mqtt_publish": {"topic": "t", "url": "http://broker"}}, "should match pattern"),
    ],
)
def test_invalid_steps_are_rejected(step: dict[str, Any], message: str) -> None:
    assert message in errors(Step, step)


def test_step_defaults_and_kind() -> None:
    step = Step.model_validate({"name": "switch", "http": {"url": "https://dns/{service}"}})
    assert step.kind == "http"
    assert step.spec == step.http
    assert (step.retry.attempts, step.retry.wait, step.retry.max_wait) == (1, 2.0, 60.0)
    assert (step.on_failure, step.timeout) == ("abort", None)
    assert step.http is not None and (step.http.method, step.http.tls_verify) == ("POST", True)


def test_command_step_defaults() -> None:
    spec = CommandStep.model_validate({"argv": ["/usr/bin/fence", "--now"]})
    assert (spec.env, spec.retryable_exit_codes) == ({}, [])


def test_json_body_is_given_as_json() -> None:
    spec = HttpStep.model_validate({"url": "http://x", "json": {"a": "{service}"}})
    assert spec.json_body == {"a": "{service}"}
    assert spec.model_dump(by_alias=True, exclude_none=True)["json"] == {"a": "{service}"}


def test_runbook_needs_a_step_and_rollback_defaults_to_none() -> None:
    assert "at least 1 item" in errors(Runbook, {"steps": []})
    runbook = Runbook.model_validate({"steps": [{"name": "s", "sleep": {"duration": "10ms"}}]})
    assert runbook.rollback == []
    assert runbook.steps[0].sleep is not None and runbook.steps[0].sleep.duration == pytest.approx(0.01)


def test_transfer_defaults_to_manual_with_a_half_hour_cooldown() -> None:
    transfer = TypeAdapter(Transfer).validate_python({"runbook": "move"})
    assert (transfer.mode, transfer.cooldown) == ("manual", 1800.0)
    assert "'auto', 'manual' or 'dry-run'" in errors(Transfer, {"runbook": "move", "mode": "yolo"})
