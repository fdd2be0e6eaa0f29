"""A step of a signature update: how it fails (StepError), and each step's line or Problem."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from scanmail.errors import ExitCode, GatewayError


class StepError(GatewayError):
    """One step of a signature update failed; exit_code says how (temporary, config, other)."""

    def __init__(
        self, text: str, exit_code: ExitCode = ExitCode.FAILURE, detail: str = ""
    ) -> None:
        super().__init__(text)
        self.exit_code = exit_code
        self.detail = detail


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a run: a stable key for alert streaks, how bad, and why."""

    key: str
    exit_code: ExitCode
    text: str
    detail: str = ""


class Steps:
    """Collects each step's line, or its problem; one failing step never stops the next."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.problems: list[Problem] = []

    def attempt(self, key: str, step: Callable[[], str], prefix: str = "") -> None:
        """Run one step; keep its line, or its GatewayError as a Problem."""
        try:
            self.lines.append(prefix + step())
        except GatewayError as exc:
            problem = Problem(key, exc.exit_code, prefix + str(exc), getattr(exc, "detail", ""))
            self.problems.append(problem)
            self.lines.append(problem.text)
