"""What chat offers and allows: `limits:`, `styles:` entries, `rooms:`, `quotas:`, what
people see while they wait (`progress:`) and the buttons under each picture (`chat:`).

The syntax of a style entry (its name, its `{prompt}` placeholder) is settled here; the
style catalogue built from the entries is chat's (bot.chat.language.styles)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import AliasChoices, Field, field_validator

from bot.config.base import _Section
from bot.config.matrix import matches, user_patterns

PLACEHOLDER = "{prompt}"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


class LimitSettings(_Section):
    max_prompt_chars: int = Field(
        1000, ge=1, le=100_000, description=("Longest prompt accepted, in characters.")
    )
    max_steps: int = Field(
        50, ge=1, le=1000, description=("Most denoising steps anyone may ask for.")
    )
    max_pixels: int = Field(
        2_359_296,
        ge=64 * 64,
        description=("Largest picture, in pixels (width x height); 2359296 is 1536x1536."),
    )
    max_images: int = Field(4, ge=1, le=64, description="Most pictures in one command (--n).")
    queue_size: int = Field(
        100, ge=1, description=("Most jobs waiting in the queue; more are refused with a notice.")
    )
    per_user_queued: int = Field(
        3, ge=1, description=("Most jobs one person may have waiting or running.")
    )
    max_input_bytes: int = Field(
        20 * 2**20,
        ge=1024,
        description=(
            "The largest file the bot fetches of a picture people reply to (image-to-image, "
            "vary, upscale, edit), in bytes."
        ),
    )
    max_input_pixels: int = Field(
        16_777_216,
        ge=64 * 64,
        description=(
            "The largest picture people reply to that the bot accepts, in pixels (read from the "
            "file's header before it is decoded)."
        ),
    )
    max_upscaled_pixels: int = Field(
        67_108_864,
        ge=64 * 64,
        description=(
            "The largest picture `!img upscale` makes, in pixels (67108864 is 8x of 1024x1024)."
        ),
    )
    # A picture hours late surprises people.
    resume_max_age_minutes: int = Field(
        60,
        ge=0,
        description=(
            "Jobs a stop left unfinished are resumed at the next start when younger than this; "
            "older ones are answered with a notice instead."
        ),
    )


class StyleSettings(_Section):
    prompt: str = Field(
        PLACEHOLDER,
        validation_alias=AliasChoices("prompt", "template"),
        description=(
            "The style's template, with {prompt} once where the person's prompt "
            "goes (`template` is another name for this key)."
        ),
    )
    negative: str = Field("", description="Added to the negative prompt.")
    lora: str | None = Field(
        None, description=("A LoRA of generation.loras applied to the pictures of this style.")
    )
    weight: float = Field(1.0, ge=-4.0, le=4.0, description="The LoRA's weight.")

    @field_validator("prompt")
    @classmethod
    def _template(cls, value: str) -> str:
        if value.count(PLACEHOLDER) != 1:
            raise ValueError(
                f'must contain {PLACEHOLDER} once, e.g. "{PLACEHOLDER}, studio lighting"'
            )
        return value


class RoomSettings(_Section):
    defaults_power_level: int = Field(
        50,
        ge=0,
        le=100,
        description=(
            "The power level a member needs in a room to change that room's defaults "
            "(`!img room set ...`); 50 is what clients call a moderator. Bot admins always may."
        ),
    )
    # A list, not a switch: an admins' own room can be allowed without every room an admin
    # types in; a room that whoever made it keeps to the two of them may still be readable
    # by anyone.
    usage_report_rooms: list[str] = Field(
        [],
        description=(
            "Room IDs where `!img usage` posts its report in the room itself. Anywhere else the "
            "report, which names every user and room, goes to the asking admin's direct message "
            "with the bot."
        ),
    )

    @field_validator("usage_report_rooms")
    @classmethod
    def _room_ids(cls, value: list[str]) -> list[str]:
        for room_id in value:
            # !opaque:server, or !opaque alone (room version 12 and later)
            if not re.match(r"^![^:\s]+(:\S+)?$", room_id):
                raise ValueError(
                    f"{room_id!r} is not a room ID like !AbCdEf:example.org "
                    "(a client shows it in the room's settings, under Advanced)"
                )
        return value


# What a reaction on one of the bot's pictures may ask for (bot.chat.language.reactions
# holds the emoji of each); "delete" and "info" make no picture but may be buttons too.
Button = Literal["again", "vary", "upscale", "enhance", "info", "delete"]


class ChatSettings(_Section):
    buttons: list[Button] = Field(
        ["again", "vary", "upscale"],
        description=(
            "The reactions the bot places under each picture it posts, as one-tap buttons: "
            "again (🔁), vary (🎲), upscale (🔍), enhance (✨), info (ℹ️), delete (🗑️). "
            "[] places none; a room (`!img room set buttons off`) or a person (`!img me set "
            "buttons off`) may turn them off. Typed reactions work either way."
        ),
    )

    @field_validator("buttons")
    @classmethod
    def _once_each(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("name each button once")
        return value


class ProgressSettings(_Section):
    edits: bool = Field(
        True,
        description=(
            "A job that waits, or runs longer than interval_seconds, gets a status notice "
            "edited in place as it moves; false: a waiting job's notice only, never edited."
        ),
    )
    interval_seconds: float = Field(
        3.0,
        ge=1.0,
        le=600.0,
        description=(
            "Seconds a job may run before it gets a status notice, and at least between two "
            "edits of one (the homeserver's rate limits count every edit)."
        ),
    )


class QuotaSettings(_Section):
    pictures_per_hour: int | None = Field(
        None,
        ge=1,
        description=(
            "Most pictures one person may make in any hour; null: no limit. Delivered and "
            "queued pictures count; failed, refused and cancelled ones don't."
        ),
    )
    pictures_per_day: int | None = Field(
        None,
        ge=1,
        description=("Most pictures one person may make in any 24 hours; null: no limit."),
    )
    exempt: list[str] = Field(
        [], description=("Who has no quota (glob patterns, like matrix.allowed_users).")
    )

    _exempt = field_validator("exempt")(user_patterns)

    def exempts(self, user_id: str) -> bool:
        return matches(user_id, self.exempt)
