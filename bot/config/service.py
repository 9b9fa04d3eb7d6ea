"""How the service keeps and shows what it does: `usage:`, `metrics:` and `disk:`."""

from __future__ import annotations

from pydantic import Field, model_validator

from bot.config.base import _Section


class UsageSettings(_Section):
    store_prompts: bool = Field(
        True,
        description=(
            "Keep the text of each prompt in the usage log; false keeps only its SHA-256 (a "
            "queued prompt is kept until it is answered)."
        ),
    )
    retention_days: int | None = Field(
        None,
        ge=1,
        description=(
            "Delete usage rows older than this many days (a daily task, also at start); null "
            "keeps them all."
        ),
    )


class MetricsSettings(_Section):
    port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description=("Serve /healthz and Prometheus /metrics on this port; null turns them off."),
    )
    host: str = Field(
        "127.0.0.1",
        description=(
            "The address they listen on. There is no authentication: keep it on loopback (the "
            "bot warns on anything else)."
        ),
    )


class DiskSettings(_Section):
    warn_free_mib: int = Field(
        512,
        ge=0,
        description=(
            "Below this many MiB free on state_dir's filesystem the bot logs a warning (once, "
            "and once more when the space is back) and `imgbot check` says WARN."
        ),
    )
    full_free_mib: int = Field(
        16,
        ge=0,
        description=(
            "Below this many MiB the disk counts as full: /healthz answers 503, imgbot_disk_full "
            "is 1, commands wait until there is space, and `imgbot check` fails."
        ),
    )

    @model_validator(mode="after")
    def _full_below_warn(self) -> DiskSettings:
        if self.full_free_mib > self.warn_free_mib:
            raise ValueError(
                f"full_free_mib ({self.full_free_mib}) is above warn_free_mib "
                f"({self.warn_free_mib}): the warning must come first"
            )
        return self
