"""How the service keeps and shows what it does: `usage:` and `metrics:`."""

from __future__ import annotations

from pydantic import Field

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
