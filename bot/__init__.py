"""The async world: Matrix, commands, rooms, usage. Never imports torch."""

from importlib import metadata


def version() -> str:
    """imgbot's installed version; "" when it runs from a source tree not installed."""
    try:
        return metadata.version("imgbot")
    except metadata.PackageNotFoundError:
        return ""
