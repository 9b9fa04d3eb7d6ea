"""The one typed settings model, one module per section: loaded once at start from a YAML
file overridden by IMGBOT_… environment variables; a wrong value stops the program with the
key's name and what is allowed (see `load_settings`).

This package's public face is what it exports here (`from bot.config import Settings`); the
modules beside it hold the sections. It may import only bot.text and generation (the
compliance loaders it checks a config against), never a wing above it.
"""

from bot.config.base import ConfigError, parse_size
from bot.config.chat import LimitSettings, ProgressSettings, QuotaSettings
from bot.config.cluster import RaySettings
from bot.config.compliance import ComplianceSettings
from bot.config.generation import GenerationSettings
from bot.config.matrix import MatrixSettings
from bot.config.service import DiskSettings, MetricsSettings, UsageSettings
from bot.config.settings import Settings, load_settings

__all__ = [
    "ComplianceSettings",
    "ConfigError",
    "DiskSettings",
    "GenerationSettings",
    "LimitSettings",
    "MatrixSettings",
    "MetricsSettings",
    "ProgressSettings",
    "QuotaSettings",
    "RaySettings",
    "Settings",
    "UsageSettings",
    "load_settings",
    "parse_size",
]
