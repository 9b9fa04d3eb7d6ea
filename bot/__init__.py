"""The async world: Matrix, commands, rooms, usage. Never imports torch (only generation does).

Its wings, top to bottom (nothing imports upward): cli, local, app, chat, ops, cluster,
matrix, store, config, text; generation sits below them all (pyproject.toml's import-linter
contracts hold it so).
"""

from importlib import metadata


def version() -> str:
    """imgbot's installed version; "" when it runs from a source tree not installed."""
    try:
        return metadata.version("imgbot")
    except metadata.PackageNotFoundError:
        return ""
