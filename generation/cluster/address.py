"""What a Ray address is: `auto`, or HOST:PORT of the head node's GCS, or ray://HOST:PORT
for Ray Client. One grammar for the bot's setting (bot.config.cluster) and the pin of a
bridge started by systemd (bridge --address), so that neither takes what the other would
refuse."""

from __future__ import annotations

import re

# host: a name, an IPv4 address, or an IPv6 address in brackets; the port is always written
# (Ray's GCS listens on 6379 and Ray Client on 10001 by default, but a port left out is
# more often a mistake than a default).
_HOST = r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
ADDRESS_RE = re.compile(rf"^(?:ray://)?{_HOST}:(\d{{1,5}})$")


def is_address(value: str) -> bool:
    """Whether `value` is `auto` or a HOST:PORT (ray:// or not) with a port of 1 to 65535."""
    match = ADDRESS_RE.match(value)
    return value == "auto" or bool(match and 1 <= int(match[1]) <= 65535)
