"""How the service keeps and shows what it does: `usage:`, `metrics:` and `disk:`."""

from __future__ import annotations

from pydantic import Field, model_validator

from bot.config.base import _Section


class UsageSettings(_Section):
    # False: the usage log keeps only a hash of each prompt (sha256), not its text.
    store_prompts: bool = True
    # Usage rows older than this many days are deleted by a daily task; null keeps them all.
    retention_days: int | None = Field(None, ge=1)


class MetricsSettings(_Section):
    # /healthz and Prometheus /metrics; off unless a port is given.
    port: int | None = Field(None, ge=1, le=65535)
    host: str = "127.0.0.1"


class DiskSettings(_Section):
    # Below this much free space (MiB) on state_dir's filesystem the bot logs a warning, once,
    # and once more when the space is back above it; `imgbot check` says WARN.
    warn_free_mib: int = Field(512, ge=0)
    # Below this much free space (MiB) the disk counts as full: /healthz answers 503 with why,
    # the metric imgbot_disk_full is 1 and `imgbot check` fails.
    full_free_mib: int = Field(16, ge=0)

    @model_validator(mode="after")
    def _full_below_warn(self) -> DiskSettings:
        if self.full_free_mib > self.warn_free_mib:
            raise ValueError(f"full_free_mib ({self.full_free_mib}) is above warn_free_mib "
                             f"({self.warn_free_mib}): the warning must come first")
        return self
