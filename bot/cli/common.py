"""What every sub-command shares: the exit statuses and loading the config."""

from __future__ import annotations

import sys

from bot.config import ConfigError, Settings, load_settings


# Exit statuses of `imgbot run`, for the service manager: only 1 (and the watchdog's 3) is
# worth a restart; a wrong config or a refused login stays wrong until someone fixes it
# (the systemd unit has RestartPreventExitStatus=2).
EXIT_RETRY = 1
EXIT_FIX_CONFIG = 2


def settings_of(args, *, secrets: bool = True) -> Settings:
    """The config of `-c`; a command that never logs in passes secrets=False, so that it
    works where only the service can read matrix.password_file (systemd's credentials)."""
    try:
        return load_settings(args.config, secrets=secrets)
    except ConfigError as exc:
        print(f"imgbot: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_FIX_CONFIG) from None
