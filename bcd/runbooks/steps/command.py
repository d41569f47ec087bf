"""`command:` step: argv without a shell, BCD_* variables in the environment, the group killed on timeout."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator

from bcd.process import BASE_ENV, run_child, signal_name
from bcd.runbooks.steps.base import OUTPUT_LIMIT, StepContext, StepError, StepOutcome, StepPlugin, bounded
from bcd.runbooks.templates import Templated
from bcd.specs import absolute_argv


class CommandStep(Templated):
    """`command:` step: argv run without a shell; BCD_* variables describe the run."""

    argv: Annotated[list[str], Field(min_length=1)]
    env: dict[str, str] = {}
    retryable_exit_codes: list[int] = Field([], description="non-zero exit codes worth retrying")

    _absolute = field_validator("argv")(absolute_argv)


DEFAULT_TIMEOUT = 30.0


class CommandKind:
    retry_timeouts = False

    def default_timeout(self, spec: Any) -> float:
        return DEFAULT_TIMEOUT

    async def execute(self, spec: CommandStep, ctx: StepContext) -> StepOutcome:
        env = {**BASE_ENV, **{f"BCD_{k.upper()}": v for k, v in ctx.variables.items()}, **spec.env}
        try:
            finished = await run_child(spec.argv, env, limit=OUTPUT_LIMIT * 2, merge_stderr=True,
                                       started=ctx.process_started)
        except OSError as exc:
            raise StepError(f"cannot run {spec.argv[0]}: {exc.strerror or exc}") from None
        code, output = finished.code, bounded(finished.output.decode(errors="replace"))
        if code == 0:
            return StepOutcome(f"{spec.argv[0]} exited 0", output)
        if code < 0:
            raise StepError(f"{spec.argv[0]} killed by {signal_name(-code)}", output=output)
        retryable = code in spec.retryable_exit_codes
        raise StepError(f"{spec.argv[0]} exited {code}", retryable=retryable, output=output)


KIND = StepPlugin("command", CommandStep, CommandKind())
