"""From a parsed command to the job the GPU runs: the command, else the room's defaults,
else the person's own, else the bot's. Pure: no I/O, and every refusal is a UsageError for
the person."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from generation.families.known import SD, Family
from generation.job import Job

from bot.chat.language.commands import Generate, UsageError
from bot.config import GenerationSettings, LimitSettings
from bot.chat.language.options import MAX_SEED, size_for_aspect
from bot.chat.language.rich import RichText, reason, rich
from bot.chat.language.styles import NO_STYLE, Style

NO_NEGATIVE = "none"

# Where a value in effect comes from, in the words the replies use; the command's own
# options come before all of them.
THIS_ROOM = "this room"
YOURS = "your defaults"
CONFIG = "the bot's config"


@dataclass(frozen=True)
class DefaultValues:
    """A room's or a person's defaults, already checked against today's limits and
    catalogues (a value that no longer fits is left out, so the next one applies)."""

    style: str | None = None
    width: int | None = None
    height: int | None = None
    aspect: tuple[int, int] | None = None  # a person's size as a ratio, sized for the model
    steps: int | None = None
    guidance: float | None = None
    negative: str | None = None
    model: str | None = None
    enhance: bool | None = None
    buttons: bool | None = None  # the reaction buttons; no job reads it

    def sets(self, key: str) -> bool:
        """Whether these defaults have a value for `key` (as `room set` and `me set` name
        it: size covers width, height and aspect)."""
        if key == "size":
            return bool(self.width and self.height) or self.aspect is not None
        return getattr(self, key) is not None


RoomDefaults = DefaultValues  # the name the room's callers know
NO_DEFAULTS = DefaultValues()  # a room or a person that sets nothing

# Whether the bot places its reaction buttons where neither a room nor a person says: the
# texts that show it take the config's chat.buttons (not empty) as an argument.
BUTTONS_BY_DEFAULT = True

# The keys a room or a person sets, as `room set` and `me set` name them, that a job uses.
KEYS = ("style", "size", "steps", "guidance", "negative", "model", "enhance", "buttons")


def layered(room: DefaultValues, person: DefaultValues) -> tuple[DefaultValues, dict[str, str]]:
    """The room's defaults over the person's, key by key, and for each key set where it
    comes from (THIS_ROOM or YOURS; a key in neither is the config's). A size is one key:
    a room's size wins over a person's size or ratio."""
    values: dict[str, object] = {}
    whose: dict[str, str] = {}
    for key in KEYS:
        for source, layer in ((THIS_ROOM, room), (YOURS, person)):
            if layer.sets(key):
                whose[key] = source
                if key == "size":
                    values.update(width=layer.width, height=layer.height, aspect=layer.aspect)
                else:
                    values[key] = getattr(layer, key)
                break
    return DefaultValues(**values), whose  # type: ignore[arg-type]


@dataclass(frozen=True)
class Catalogue:
    """What there is to choose from: models (by name, with their native size) and styles."""

    default_model: str
    models: dict[str, tuple[int, int]]
    styles: dict[str, Style] = field(default_factory=dict)
    families: dict[str, Family] = field(default_factory=dict)  # by model; SD where missing
    edit_model: str | None = None  # what `!img edit` runs; None: no editing

    @property
    def can_edit(self) -> bool:
        return self.edit_model is not None

    def family(self, model: str) -> Family:
        return self.families.get(model, SD)

    def described(self, model: str) -> str:
        """The model as messages name it: `flux (FLUX.1 [schnell])`."""
        return f"{model} ({self.family(model).label})"

    def unknown_model(self, name: str) -> RichText:
        return rich(
            "There is no model {name!r}; choose one of: {models} (`models` tells more).",
            name=name,
            models=", ".join(self.models),
        )

    def only_edits(self, model: str) -> RichText | None:
        """Why `model` makes no pictures from a prompt, nor from a picture and a prompt (its
        family only edits by instruction), or None."""
        if self.family(model).text_to_image:
            return None
        runs = (
            ""
            if model == self.edit_model or self.edit_model is None
            else (f", which runs on {self.edit_model}")
        )
        return rich(
            "The model {model} only edits pictures: reply to a picture with "
            "`edit <what to change>`{runs}.",
            model=self.described(model),
            runs=runs,
        )

    def unknown_style(self, name: str) -> RichText:
        return rich(
            "There is no style {name!r}; choose one of: {styles} (or `none`; `styles` lists them).",
            name=name,
            styles=", ".join(self.styles),
        )


def resolve(
    command: Generate,
    defaults: GenerationSettings,
    limits: LimitSettings,
    catalogue: Catalogue,
    room: DefaultValues = DefaultValues(),
    random_seed: Callable[[int], int] = secrets.randbelow,
    *,
    edit: bool = False,
    person: DefaultValues = DefaultValues(),
) -> Job | UsageError:
    """The job a command asks for, with what it left open taken from the room, the person's
    own defaults (`person`) or the bot. `edit`: the command is an `edit`'s instruction,
    which a model that only edits takes."""
    room, whose = layered(room, person)  # from here on "room" is the two, room first
    model = command.model or room.model or catalogue.default_model
    if model not in catalogue.models:
        return UsageError(catalogue.unknown_model(model))
    only_edits = None if edit else catalogue.only_edits(model)
    if only_edits:
        return UsageError(only_edits)
    style_name = command.style or room.style
    style = None
    if style_name and style_name != NO_STYLE:
        style = catalogue.styles.get(style_name)
        if style is None:
            return UsageError(catalogue.unknown_style(style_name))

    family = catalogue.family(model)
    if command.width and command.height:
        width, height = command.width, command.height
    elif command.aspect:
        native_width, native_height = catalogue.models[model]
        try:
            width, height = size_for_aspect(
                command.aspect, native_width * native_height, limits.max_pixels
            )
        except ValueError as exc:
            return UsageError(reason(exc) + ".")
    elif room.width and room.height:
        width, height = room.width, room.height
    elif room.aspect:
        native_width, native_height = catalogue.models[model]
        try:
            width, height = size_for_aspect(
                room.aspect, native_width * native_height, limits.max_pixels
            )
        except ValueError:  # only a person's size is a ratio
            return UsageError(
                rich(
                    "Your default size {w}:{h} has no size within the limit of {most:,} "
                    "pixels; give `--size`, or `me set size WxH`.",
                    w=room.aspect[0],
                    h=room.aspect[1],
                    most=limits.max_pixels,
                )
            )
    else:
        width, height = defaults.width_height

    wrong_size = family.check_size(width, height)
    if wrong_size:
        step = family.multiple
        return UsageError(
            rich(
                "{wrong_size}; try `--size {w}x{h}`, or `--ar`.",
                wrong_size=wrong_size,
                w=max(step, width // step * step),
                h=max(step, height // step * step),
            )
        )

    count = command.count or 1
    # Every picture's seed must be one that --seed accepts, to make it again.
    if command.seed is not None and command.seed + count - 1 > MAX_SEED:
        return UsageError(
            rich(
                "With `--n {count}` the seed can be at most {most}.",
                count=count,
                most=MAX_SEED - count + 1,
            )
        )
    seed = command.seed if command.seed is not None else random_seed(MAX_SEED + 2 - count)
    prompt = command.prompt
    refused = _beyond_family(command, model, catalogue)
    if refused:
        return refused
    guidance = _first(
        command.guidance,
        room.guidance if family.guidance else None,
        _default(defaults, "guidance", family),
    )
    negative: str | UsageError
    if not family.negative_prompt:
        negative = ""  # the room's negative prompt rests on a model without any
    else:
        negative = _negative(command, room, defaults, guidance, whose)
    if isinstance(negative, UsageError):
        return negative
    if style is not None:
        prompt, negative = style.apply(prompt, negative)
    if style is not None and style.lora and model != catalogue.default_model:
        if command.model is None and whose.get("model") == YOURS:
            return UsageError(
                rich(
                    "The style {style} uses the LoRA {lora}, which is made for the model "
                    "{default}, and your default model is {model}: add `--model {default}`, "
                    "or choose another style.",
                    style=style.name,
                    lora=style.lora,
                    default=catalogue.default_model,
                    model=model,
                )
            )
        return UsageError(
            rich(
                "The style {style} uses the LoRA {lora}, which is made for the model "
                "{default}; leave out `--model {model}`, or choose another style.",
                style=style.name,
                lora=style.lora,
                default=catalogue.default_model,
                model=model,
            )
        )
    return Job(
        prompt=prompt,
        seed=seed,
        steps=_first(command.steps, room.steps, _default(defaults, "steps", family)),
        width=width,
        height=height,
        guidance=guidance,
        negative_prompt=negative,
        count=count,
        model=model,
        style=style.name if style else "",
        lora=style.lora if style else "",
        lora_weight=style.weight if style and style.lora else 0.0,
        enhance=bool(_first(command.enhance, room.enhance, False)),
        fast=bool(command.fast),
    )


def _default(defaults: GenerationSettings, key: str, family: Family):
    """The bot's default steps or guidance: the config's where it sets one, else the model
    family's own (8 steps for Z-Image-Turbo, 4 without guidance for FLUX.1 [schnell])."""
    if key in defaults.model_fields_set:
        return getattr(defaults, key)
    return family.steps if key == "steps" else family.guidance_default


def for_model(defaults: GenerationSettings, family: Family) -> GenerationSettings:
    """The bot's defaults with the steps and guidance a model of `family` gets, for what
    help and `!img room` show."""
    return defaults.model_copy(
        update={key: _default(defaults, key, family) for key in ("steps", "guidance")}
    )


def _beyond_family(command: Generate, model: str, catalogue: Catalogue) -> UsageError | None:
    """A refusal naming the model, for what its family does not do (rather than an option
    that would quietly do nothing)."""
    family = catalogue.family(model)
    typed = command.negative_prompt
    if typed and typed != NO_NEGATIVE and not family.negative_prompt:
        return UsageError(
            rich(
                "The model {model} takes no negative prompt; leave out `--no`, or say what "
                "you want in the prompt.",
                model=catalogue.described(model),
            )
        )
    if command.guidance is not None and family.guidance is None:
        return UsageError(
            rich(
                "The model {model} is distilled to run without guidance; leave out `--guidance`.",
                model=catalogue.described(model),
            )
        )
    return None


def guided(guidance: float) -> bool:
    """Whether a negative prompt does anything: diffusers uses it only for classifier-free
    guidance, which runs at a guidance above 1 (and makes each step about twice the work)."""
    return guidance > 1


def room_guidance(room: DefaultValues, defaults: GenerationSettings) -> float:
    return _first(room.guidance, defaults.guidance)


def _negative(
    command: Generate,
    room: DefaultValues,
    defaults: GenerationSettings,
    guidance: float,
    whose: dict[str, str],
) -> str | UsageError:
    """The job's negative prompt; a UsageError rather than one that would do nothing. A room's
    own negative prompt rests while the room's guidance is 1 or below (`room` says so); so
    does a person's, while the guidance of the room and the person is."""
    typed = command.negative_prompt
    if typed == NO_NEGATIVE:  # "--no none": without the room's negative prompt this time
        return ""
    if typed:
        if guided(guidance):
            return typed
        if command.guidance is not None:
            source = rich("you asked for `--guidance {g:g}`", g=guidance)
        elif whose.get("guidance") == YOURS:
            source = rich("your default guidance is {g:g} (`me set guidance`)", g=guidance)
        elif room.guidance is not None:
            source = rich("this room's guidance is {g:g} (`room set guidance`)", g=guidance)
        else:
            source = rich("the bot's default guidance is {g:g}", g=guidance)
        return UsageError(
            rich(
                "A negative prompt (`--no`) works only with guidance above 1, and {source}. "
                "Add `--guidance 5` to use it (each step then takes about twice as long, and "
                "a model made for guidance 0 may want less), or leave out `--no`.",
                source=source,
            )
        )
    if (
        not room.negative
        or room.negative == NO_NEGATIVE
        or not guided(room_guidance(room, defaults))
    ):
        return ""
    if guided(guidance):
        return room.negative
    mine = whose.get("negative") == YOURS
    return UsageError(
        rich(
            "{whose} ({negative!r}, `{where} set negative`) works only with guidance above 1, "
            "and you asked for `--guidance {g:g}`. Add `--no none` to make this picture "
            "without it, or leave out `--guidance`.",
            whose="Your default negative prompt" if mine else "This room's negative prompt",
            where="me" if mine else "room",
            negative=room.negative,
            g=guidance,
        )
    )


def _first(*values):
    return next(value for value in values if value is not None)
