"""A picture's card (`!img info`, the ℹ️ reaction): how one of the bot's pictures was made,
and the `!img` command that makes the same picture again.

Pure: the replies role (bot.chat.replies.answers) finds what is known of the picture (its job
record, the usage row, the picture's own PNG parameters where the log keeps no prompts) and
this module puts it into words. The command spells out every value (seed, steps, size,
guidance, model, style, negative prompt), so that no room's or person's defaults change it
where it is typed back.
"""

from __future__ import annotations

import hashlib
import html
import re
import time
from dataclasses import dataclass, field
from typing import Any

from generation.job import Job

from bot.chat.language.resolve import NO_NEGATIVE, Catalogue
from bot.chat.language.styles import NO_STYLE, Style
from bot.chat.language.subcommands import SUBCOMMANDS

HASHED = "sha256:"  # how the usage log keeps a prompt when usage.store_prompts is off
NOT_KEPT = "not kept"
# A prompt's first word, as the parser reads it: a sub-command's word must be put in quotes.
_BARE_WORD = re.compile(r"^([a-z]+)([.,!?:;]*)$", re.IGNORECASE)


@dataclass(frozen=True)
class Asked:
    """Who asked for the picture and how its job went: its row in the usage log."""

    user: str
    at: float  # when the job was accepted, unix time
    queue_seconds: float | None = None
    generation_seconds: float | None = None
    worker: str | None = None  # the GPU worker that made it, where recorded


@dataclass(frozen=True)
class Made:
    """What the bot knows of one of its pictures."""

    # As recorded: the prompt and negative prompt are those drawn (the style applied), or
    # their hashes ("sha256:…") when the usage log keeps no prompts.
    job: Job
    prompt: str  # as typed, before the style (hashed as the job's are)
    picture: int | None  # which of the job's pictures; None: the contact sheet of them all
    asked: Asked | None = None  # None: the usage row is gone (usage.retention_days)
    # The picture's own PNG parameters, read where the log keeps no prompts; they carry the
    # prompts only with compliance.embed_prompt.
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Card:
    """The card's lines as (label, value), then the command (None: none can be given) and
    what it needs; `plain()` and `html()` render it."""

    lines: tuple[tuple[str, str], ...]
    command: str | None
    how: str  # the words before the command, or why there is none

    def plain(self) -> str:
        text = [f"{label}: {value}" if label else value for label, value in self.lines]
        text.append(self.how)
        if self.command is not None:
            text.append(self.command)  # a line of its own: copied whole
        return "\n".join(text)

    def html(self) -> str:
        text = [
            f"<b>{html.escape(label)}</b>: {html.escape(value)}" if label else html.escape(value)
            for label, value in self.lines
        ]
        text.append(html.escape(self.how))
        body = "<br>\n".join(text)
        if self.command is not None:  # a code block: clients offer to copy it
            body += f"\n<pre><code>{html.escape(self.command)}</code></pre>"
        return body


def hashed(text: str) -> str:
    """A prompt as the usage log keeps it when it keeps no prompts (bot.store.retention's
    prompt_for_log, which this pure module may not import)."""
    return HASHED + hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class _Prompts:
    drawn: str  # the prompt the model was given, the style applied
    negative: str  # the negative prompt the model was given, the style's included
    # As typed, before the style: the prompt and the negative prompt (--no); None where the
    # style has changed since, so that they cannot be told apart from it.
    typed: tuple[str, str] | None
    where: str = ""  # where they were read, when not from the log


def _prompts(made: Made, style: Style | None) -> _Prompts | None:
    """The picture's prompts, from the log or else from the picture itself (checked against
    the log's hashes); None when neither keeps them."""
    job = made.job
    if not made.prompt.startswith(HASHED):
        drawn, negative, where = job.prompt, job.negative_prompt, ""
    else:
        kept, kept_negative = made.params.get("prompt"), made.params.get("negative_prompt", "")
        if not isinstance(kept, str) or not isinstance(kept_negative, str):
            return None
        drawn, negative = kept, kept_negative
        # The picture must be the one the log describes.
        if hashed(drawn) != job.prompt or hashed(negative) != job.negative_prompt:
            return None
        where = "read from the picture: the log keeps no prompts"
    typed: tuple[str, str] | None
    if job.kind == "edit":
        # An edit names no style, though a room's may have reached its prompt: the
        # instruction as typed, where the log keeps it.
        typed = (drawn if where else made.prompt, negative)
    elif not job.style:
        typed = (drawn, negative)
    else:
        typed = style.typed(drawn, negative) if style is not None else None
    if typed is not None and not where and typed[0] != made.prompt:
        typed = None  # the log's prompt as typed is not what the style was given
    return _Prompts(drawn, negative, typed, where)


def _quoted(prompt: str) -> str:
    """The prompt as it must be typed after the prefix: a first word that is a sub-command's
    goes in quotes (`!img "cancel" culture`), as the parser asks."""
    first, _, rest = prompt.partition(" ")
    word = _BARE_WORD.match(first)
    if word and word[1].lower() in SUBCOMMANDS:
        return f'"{word[1]}"{word[2]} {rest}'.rstrip()
    return prompt


def _seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f} s"


def _same_style(job: Job, catalogue: Catalogue) -> Style | None:
    """The job's style as the catalogue has it today, when it still brings the same LoRA."""
    style = catalogue.styles.get(job.style) if job.style else None
    if style is None or (style.lora, style.weight if style.lora else 0.0) != (
        job.lora,
        job.lora_weight,
    ):
        return None
    return style


def _seeds(job: Job, picture: int | None) -> str:
    if picture is None and job.count > 1:
        return f"{job.seed}–{job.seed + job.count - 1}"
    return str(job.seed + (picture or 0))


def card(made: Made, catalogue: Catalogue, prefix: str) -> Card:
    """The card of one of the bot's pictures, or of a contact sheet (its whole job)."""
    job = made.job
    model = job.model or catalogue.default_model
    family = catalogue.family(model)
    prompts = _prompts(made, _same_style(job, catalogue))
    lines: list[tuple[str, str]] = []
    if job.kind == "upscale" and job.factor == 1:  # ✨ on a picture: no upscaler ran
        lines.append(("", "How this enhanced picture was made (its source, finished):"))
    elif job.kind == "upscale":
        lines.append(
            ("", f"How this upscale was made ({job.factor}× to {job.width}×{job.height}):")
        )
    elif made.picture is None and job.count > 1:
        lines.append(("", f"How this contact sheet of {job.count} pictures was made:"))
    elif job.count > 1 and made.picture is not None:
        lines.append(
            ("", f"How this picture was made (picture {made.picture + 1} of {job.count}):")
        )
    else:
        lines.append(("", "How this picture was made:"))
    if prompts is None:
        lines.append(("Prompt", f"{NOT_KEPT} (the log keeps no prompts, nor does the picture)"))
    elif job.kind == "upscale" and not prompts.drawn:
        pass  # an upscale of someone's picture: no prompt made it
    else:
        typed = prompts.typed[0] if prompts.typed is not None else prompts.drawn
        lines.append(("Prompt", typed + (f" ({prompts.where})" if prompts.where else "")))
        if typed != prompts.drawn:
            lines.append(("Drawn as", prompts.drawn))
        lines.append(("Negative prompt", prompts.negative or "none"))
    if job.kind != "upscale":
        lines.append(("Seed", _seeds(job, made.picture)))
        lines.append(("Steps", str(job.steps)))
    lines.append(("Size", f"{job.width}×{job.height}"))
    if job.kind != "upscale":
        takes = family.guidance is not None
        lines.append(("Guidance", f"{job.guidance:g}" if takes else "none (the model takes none)"))
        known = model in catalogue.models
        lines.append(
            ("Model", catalogue.described(model) if known else f"{model} (no longer configured)")
        )
        lines.append(("Style", job.style or "none"))
        if job.lora:
            lines.append(("LoRA", f"{job.lora} at {job.lora_weight:g}"))
    if job.kind == "img2img":
        lines.append(("Strength", f"{job.strength:g}"))
    if job.kind != "txt2img":
        source = job.source_url or "a picture"
        if job.references:
            source += f", and {len(job.references)} more as references"
        lines.append(("Made from", source))
    extras = [word for word, on in (("enhanced", job.enhance), ("tiny decoder", job.fast)) if on]
    if extras:
        lines.append(("Finish", ", ".join(extras)))
    asked = made.asked
    if asked is None:
        lines.append(("Asked by", f"{NOT_KEPT} (the usage log no longer has its row)"))
    else:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(asked.at))
        lines.append(("Asked by", f"{asked.user}, {when}"))
        lines.append(
            (
                "Took",
                f"{_seconds(asked.generation_seconds)} to make, "
                f"{_seconds(asked.queue_seconds)} waiting in the queue",
            )
        )
        if asked.worker:
            lines.append(("Worker", asked.worker))
    command, how = _command(made, prompts, catalogue, prefix)
    return Card(tuple(lines), command, how)


def _command(
    made: Made, prompts: _Prompts | None, catalogue: Catalogue, prefix: str
) -> tuple[str | None, str]:
    """The command that makes the picture again, and the words before it; (None, why not)."""
    job = made.job
    reply = "Reply to the picture it was made from with:"
    if job.kind == "upscale" and job.factor == 1:  # no command says it: the ✨ reaction does
        return None, "React with ✨ to the picture it was made from to make it again."
    if job.kind == "upscale":
        return f"{prefix} upscale {job.factor}" + (" --enhance" if job.enhance else ""), reply
    if prompts is None:
        return None, "No command makes it again here: its prompt is not kept."
    model = job.model or catalogue.default_model
    if model not in catalogue.models:
        return None, f"No command makes it again: the model {model} is no longer configured."
    family = catalogue.family(model)
    if prompts.typed is not None:
        (prompt, negative), style = prompts.typed, job.style or NO_STYLE
    elif not job.lora:
        # The style has changed since: what it made of the prompts, without a style.
        prompt, negative, style = prompts.drawn, prompts.negative, NO_STYLE
    else:
        return None, (
            f"No command makes it again: the style {job.style}, with its LoRA, has changed since."
        )
    options = [f"--seed {job.seed + (made.picture or 0)}", f"--steps {job.steps}"]
    if job.kind != "edit":  # an edit keeps its picture's size, on the editing model
        options.append(f"--size {job.width}x{job.height}")
    if family.guidance is not None:
        options.append(f"--guidance {job.guidance:g}")
    if job.kind != "edit":
        options += [f"--model {model}", f"--style {style}"]
    if job.kind == "img2img":
        options.append(f"--strength {job.strength:g}")
    if made.picture is None and job.count > 1:
        options.append(f"--n {job.count}")
    if job.enhance:
        options.append("--enhance")
    if job.fast:
        options.append("--fast")
    if family.negative_prompt:
        # Last: --no takes the words up to the next option. `none` keeps a room's or a
        # person's default negative prompt out; a style's comes back with --style.
        options.append(f"--no {negative or NO_NEGATIVE}")
    words = f"edit {prompt}" if job.kind == "edit" else _quoted(prompt)
    command = f"{prefix} {words} {' '.join(options)}"
    if job.kind == "txt2img":
        return command, "Make it again (every value spelled out, so that no defaults change it):"
    return command, reply
