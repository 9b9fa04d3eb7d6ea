"""The defaults in effect where a command is made: a room's, as its moderators kept them,
checked against today's limits, styles and models each time they are used (a value that
no longer fits is left out, so the bot's own applies)."""

from __future__ import annotations

from bot.chat.language import rooms
from bot.chat.language.resolve import Catalogue, RoomDefaults
from bot.config import LimitSettings
from bot.store import room_defaults


class Defaults:
    """Reads the kept defaults and checks them against what there is today."""

    def __init__(self, db, limits: LimitSettings, catalogue: Catalogue):
        self._db = db
        self._limits = limits
        self._catalogue = catalogue

    async def of_room(self, room_id: str) -> tuple[RoomDefaults, dict[str, str]]:
        """The room's defaults that still fit, and why the others don't."""
        return rooms.usable(
            await room_defaults.stored(self._db, room_id), self._limits, self._catalogue
        )
