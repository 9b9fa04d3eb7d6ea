"""The async world: Matrix, commands, rooms, usage. Never imports torch (only generation does).

Its wings, top to bottom (nothing imports upward): cli, local, app, chat, ops, matrix, store,
config, text; generation sits below them all.
"""

from importlib import metadata


def version() -> str:
    """imgbot's installed version; "" when it runs from a source tree not installed."""
    try:
        return metadata.version("imgbot")
    except metadata.PackageNotFoundError:
        return ""
