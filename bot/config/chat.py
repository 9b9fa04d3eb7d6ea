"""What chat offers and allows: `limits:`, `styles:` entries, `rooms:`, `quotas:`, and
what people see while they wait (`progress:`).

The syntax of a style entry (its name, its `{prompt}` placeholder) is settled here; the
style catalogue built from the entries is chat's (bot.chat.styles)."""

from __future__ import annotations

import re

from pydantic import AliasChoices, Field, field_validator

from bot.config.base import _Section
from bot.config.matrix import MatrixSettings

PLACEHOLDER = "{prompt}"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


class LimitSettings(_Section):
    max_prompt_chars: int = Field(1000, ge=1, le=100_000)
    max_steps: int = Field(50, ge=1, le=1000)
    max_pixels: int = Field(2_359_296, ge=64 * 64)
    max_images: int = Field(4, ge=1, le=64)
    queue_size: int = Field(100, ge=1)
    per_user_queued: int = Field(3, ge=1)
    # Pictures people reply to (for img2img, vary, upscale): the largest file fetched, and
    # the largest picture accepted, in pixels.
    max_input_bytes: int = Field(20 * 2**20, ge=1024)
    max_input_pixels: int = Field(16_777_216, ge=64 * 64)
    # The largest picture `!img upscale` makes (8× of 1024² is 67108864).
    max_upscaled_pixels: int = Field(67_108_864, ge=64 * 64)
    # Jobs left unfinished by a stop are resumed at the next start when younger than this;
    # older ones are answered with a notice instead (a picture hours late surprises people).
    resume_max_age_minutes: int = Field(60, ge=0)


class StyleSettings(_Section):
    # A template with {prompt} where the person's prompt goes (`template:` is the same key).
    prompt: str = Field(PLACEHOLDER, validation_alias=AliasChoices("prompt", "template"))
    negative: str = ""
    # A LoRA of generation.loras applied to the pictures of this style, at this weight.
    lora: str | None = None
    weight: float = Field(1.0, ge=-4.0, le=4.0)

    @field_validator("prompt")
    @classmethod
    def _template(cls, value: str) -> str:
        if value.count(PLACEHOLDER) != 1:
            raise ValueError(f"must contain {PLACEHOLDER} once, e.g. \"{PLACEHOLDER}, "
                             "studio lighting\"")
        return value


class RoomSettings(_Section):
    # The power level a member needs in a room to change that room's defaults (50 is what
    # clients call a moderator). Bot admins may always.
    defaults_power_level: int = Field(50, ge=0, le=100)
    # Room IDs where `!img usage` answers in the room itself. Elsewhere the report, which
    # names every user and room, goes to the asking admin's direct message with the bot
    # (only the room the bot made for that: a room that whoever made it keeps to the two of
    # them may still be readable by anyone). A list, not a switch: an admins' own room can
    # be allowed without every room an admin types in.
    usage_report_rooms: list[str] = []

    @field_validator("usage_report_rooms")
    @classmethod
    def _room_ids(cls, value: list[str]) -> list[str]:
        for room_id in value:
            # !opaque:server, or !opaque alone (room version 12 and later)
            if not re.match(r"^![^:\s]+(:\S+)?$", room_id):
                raise ValueError(f"{room_id!r} is not a room ID like !AbCdEf:example.org "
                                 "(a client shows it in the room's settings, under Advanced)")
        return value


class ProgressSettings(_Section):
    # A job that waits, or runs longer than the interval, gets a status notice that is
    # edited in place as it moves; false: the notice of a waiting job only, never edited.
    edits: bool = True
    # Seconds a job may run before it gets a status notice, and at least between two edits
    # of one (the homeserver's rate limits count every edit).
    interval_seconds: float = Field(3.0, ge=1.0, le=600.0)


class QuotaSettings(_Section):
    pictures_per_hour: int | None = Field(None, ge=1)
    pictures_per_day: int | None = Field(None, ge=1)
    exempt: list[str] = []

    _exempt = field_validator("exempt")(MatrixSettings._patterns.__func__)
