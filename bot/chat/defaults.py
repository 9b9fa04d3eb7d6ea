"""The defaults in effect where a command is made: its room's, as the room's moderators kept
them, and its sender's own (`!img me`), each checked against today's limits, styles and
models each time they are used (a value that no longer fits is left out, so the next one in
line applies: the room's, then the person's, then the bot's config)."""

from __future__ import annotations

from dataclasses import dataclass

from bot.chat.language import personal, rooms
from bot.chat.language.resolve import NO_DEFAULTS, Catalogue, DefaultValues, layered
from bot.config import LimitSettings
from bot.store import personal_defaults, room_defaults


@dataclass(frozen=True)
class Here:
    """The defaults where one command is made: its room's, and its sender's below them."""

    room: DefaultValues = NO_DEFAULTS
    person: DefaultValues = NO_DEFAULTS

    @property
    def merged(self) -> DefaultValues:
        return layered(self.room, self.person)[0]


class Defaults:
    """Reads the kept defaults and checks them against what there is today."""

    def __init__(self, db, limits: LimitSettings, catalogue: Catalogue):
        self._db = db
        self._limits = limits
        self._catalogue = catalogue

    async def of_room(self, room_id: str) -> tuple[DefaultValues, dict[str, str]]:
        """The room's defaults that still fit, and why the others don't."""
        return rooms.usable(
            await room_defaults.stored(self._db, room_id), self._limits, self._catalogue
        )

    async def of_person(self, user_id: str) -> tuple[DefaultValues, dict[str, str]]:
        """The person's own defaults that still fit, and why the others don't."""
        return personal.usable(
            await personal_defaults.stored(self._db, user_id), self._limits, self._catalogue
        )

    async def here(self, room_id: str, user_id: str) -> Here:
        return Here((await self.of_room(room_id))[0], (await self.of_person(user_id))[0])
