"""The chat commands as values: what `parse` (parser.py) makes of a message, and what the
roles that handle them receive."""

from __future__ import annotations

from dataclasses import dataclass

from bot.chat.language.rich import RichText, as_rich


@dataclass(frozen=True, init=False)
class UsageError:
    """What was wrong with a command, in words for the person who typed it: `text` is the
    notice (a str is taken as plain text), `message` its plain body (for the usage log, the
    command line)."""

    text: RichText

    def __init__(self, message: str | RichText):
        object.__setattr__(self, "text", as_rich(message))

    @property
    def message(self) -> str:
        return self.text.plain()


@dataclass(frozen=True)
class Generate:
    """`!img <prompt> [options]`; options left None take the room's or the bot's defaults."""

    prompt: str
    seed: int | None = None
    steps: int | None = None
    width: int | None = None
    height: int | None = None
    aspect: tuple[int, int] | None = None
    guidance: float | None = None
    negative_prompt: str | None = None
    count: int | None = None
    style: str | None = None
    model: str | None = None
    strength: float | None = None  # image-to-image, when the command replies to a picture
    enhance: bool | None = None
    fast: bool | None = None


@dataclass(frozen=True)
class Again:
    """`!img again`, in reply to one of the bot's pictures: the same, with a new seed."""

    enhance: bool | None = None


@dataclass(frozen=True)
class Vary:
    """`!img vary [strength]`, in reply to one of the bot's pictures: image-to-image from
    it, with its own prompt."""

    strength: float | None = None
    enhance: bool | None = None


@dataclass(frozen=True)
class Upscale:
    """`!img upscale [2|4|8]`, in reply to any picture."""

    factor: int = 4
    enhance: bool | None = None


@dataclass(frozen=True)
class Edit:
    """`!img edit <instruction> [options]`, in reply to any picture: the picture changed as
    the instruction says ("make it night"), by an editing model (generation.edit_model)."""

    instruction: str
    seed: int | None = None
    steps: int | None = None
    guidance: float | None = None
    negative_prompt: str | None = None
    count: int | None = None
    enhance: bool | None = None
    fast: bool | None = None


# The commands that work on the picture they reply to.
ON_A_PICTURE = (Again, Vary, Upscale, Edit)


@dataclass(frozen=True)
class Info:
    """`!img info`, in reply to one of the bot's pictures: its card (how it was made, and
    the command that makes it again). Answered with words, not a job."""


@dataclass(frozen=True)
class Help:
    topic: str | None = None  # one of subcommands.HELP_TOPICS; None: the short help


@dataclass(frozen=True)
class Styles:
    pass


@dataclass(frozen=True)
class Models:
    pass


@dataclass(frozen=True)
class QueueStatus:
    pass


@dataclass(frozen=True)
class Cancel:
    pass


@dataclass(frozen=True)
class Pause:
    pass


@dataclass(frozen=True)
class Resume:
    pass


@dataclass(frozen=True)
class RoomShow:
    pass


@dataclass(frozen=True)
class RoomSet:
    key: str
    # Checked by the parser where the limits suffice; style and model names by
    # rooms.canonical, which knows the catalogue.
    value: str


@dataclass(frozen=True)
class RoomReset:
    key: str | None = None  # None: every key


@dataclass(frozen=True)
class MeShow:
    """`!img me`: the person's own defaults, and what is in effect for them in this room."""


@dataclass(frozen=True)
class MeSet:
    """`!img me set KEY VALUE`: a default of the person's own, in every room and DM."""

    key: str  # `ar` arrives as size, its value as a ratio (16:9)
    # Checked by the parser where the limits suffice; style and model names by
    # rooms.canonical with personal.KEYS, which knows the catalogue.
    value: str


@dataclass(frozen=True)
class MeReset:
    key: str | None = None  # None: every key


@dataclass(frozen=True)
class Usage:
    span: str = "7d"
    user: str | None = None


Command = (
    Generate
    | Again
    | Vary
    | Upscale
    | Edit
    | Info
    | Help
    | Styles
    | Models
    | QueueStatus
    | Cancel
    | Pause
    | Resume
    | RoomShow
    | RoomSet
    | RoomReset
    | MeShow
    | MeSet
    | MeReset
    | Usage
)
