"""`imgbot run`: the bot itself, with exit statuses a service manager can act on."""

from __future__ import annotations

import asyncio
import logging

from bot.cli.common import EXIT_FIX_CONFIG, EXIT_RETRY, settings_of
from bot.ops.logs import setup_logging

log = logging.getLogger("imgbot")


def add_parser(sub) -> None:
    run = sub.add_parser("run", help="run the bot")
    run.add_argument("-c", "--config", required=True, help="the YAML config file")
    run.set_defaults(run=cmd_run)


def cmd_run(args) -> int:
    from bot.app import DeviceFault, ServiceDown, run_bot
    from bot.matrix.cross_signing import CrossSigningFailed
    from bot.matrix import reach
    from bot.matrix.messages import NETWORK_ERRORS
    from bot.matrix.session import LoginFailed
    from bot.matrix.sync import TokenRejected
    from generation.errors import ClusterUnavailable
    from bot.ops.disk import DiskWatch, refused_for_space

    settings = settings_of(args)
    setup_logging(settings.log_level, settings.log_format)
    try:
        # The login is checked before the model is loaded, so a wrong password or an
        # unreachable homeserver is reported in seconds.
        asyncio.run(run_bot(settings))
    except SystemExit as exc:
        if not isinstance(exc.code, str):
            raise
        log.error("%s", exc.code)  # a model folder that is not one
        return EXIT_FIX_CONFIG
    except (LoginFailed, TokenRejected) as exc:
        log.error("%s", exc)
        return EXIT_FIX_CONFIG
    except CrossSigningFailed as exc:
        log.error("cross-signing: %s", exc)
        return EXIT_RETRY if exc.retry else EXIT_FIX_CONFIG
    except (DeviceFault, ServiceDown, ClusterUnavailable) as exc:
        log.error("%s", exc)
        return EXIT_RETRY
    except NETWORK_ERRORS as exc:
        url = settings.matrix.homeserver_url
        log.error(
            "cannot reach the homeserver at %s: %s (is it running? is "
            "matrix.homeserver_url right?)",
            url,
            reach.reason(exc, url),
        )
        return EXIT_RETRY
    except Exception as exc:
        reading = DiskWatch(settings.state_dir, settings.disk).check()
        if not refused_for_space(exc, reading):
            raise
        # A start writes (the jobs it resumes, its login): nothing is lost, it is only
        # early. systemd starts it again; so does an operator once space is freed.
        log.error(
            "state_dir %s is out of disk space (%s): the bot cannot start until "
            "space is freed there",
            settings.state_dir,
            exc,
        )
        return EXIT_RETRY
    log.info("stopped")
    return 0
