"""The lines of `imgbot check`: ok, WARN (works, but unsafe: said, not failed), FAIL with the
reason, or skip."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    status: str  # "ok", "WARN", "FAIL" or "skip"
    name: str
    detail: str

    @property
    def failed(self) -> bool:
        return self.status == "FAIL"

    def line(self) -> str:
        # A multi-line reason (several wrong keys) stays readable under its line.
        return f"{self.status:<5} {self.name}: {self.detail}".replace("\n", "\n      ")


def ok(name: str, detail: str) -> Result:
    return Result("ok", name, detail)


def warn(name: str, detail: str) -> Result:
    """Something that works but puts the bot at risk: the exit status stays 0."""
    return Result("WARN", name, detail)


def fail(name: str, detail: str) -> Result:
    return Result("FAIL", name, detail)


def skip(name: str, needs: str) -> Result:
    return Result("skip", name, f"needs {needs}")
