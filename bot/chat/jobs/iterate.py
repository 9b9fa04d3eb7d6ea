"""Continuing from a picture: `again`, `vary`, `upscale`, `edit`, and `!img <prompt>` in
reply to any picture (image-to-image). Turns such a command, the picture it replies to and what
the bot knows of that picture into a job, or a UsageError for the person."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import secrets

from nio import AsyncClient
from PIL import Image

from generation.job import Job
from generation.postprocess.png import read_parameters

from bot.store import gallery
from bot.matrix import sources
from bot.chat.jobs import source_pictures
from bot.chat.language import editing
from bot.chat.defaults import Here
from bot.chat.jobs.source_pictures import fitted
from bot.chat.language.commands import Again, Edit, Generate, UsageError, Upscale, Vary
from bot.chat.language.rich import reason, rich
from bot.chat.language.options import (
    DEFAULT_STRENGTH,
    MAX_ASPECT,
    MAX_SEED,
    VARY_STRENGTH,
    size_for_aspect,
    size_limit,
)
from bot.chat.language.resolve import Catalogue, resolve
from bot.config import LimitSettings, Settings
from bot.matrix.sources import Source, SourceError


# Beyond this, picture formats and viewers give up (JPEG's limit is 65,535).
MAX_UPSCALED_SIDE = 32768


def new_seed(count: int = 1) -> int:
    return secrets.randbelow(MAX_SEED + 2 - count)


def source_size(image: Image.Image, native: tuple[int, int], max_pixels: int) -> tuple[int, int]:
    """A size near the model's native pixel count with the picture's aspect (at most 21:9;
    a wider picture is cropped), in multiples of 64."""
    ratio = min(max(image.width / image.height, 1 / MAX_ASPECT), MAX_ASPECT)
    aspect = (round(ratio * 1000), 1000)
    return size_for_aspect(aspect, native[0] * native[1], max_pixels)


def kept_size(
    image: Image.Image, native: tuple[int, int], grid: int, max_pixels: int
) -> tuple[int, int]:
    """The picture's own size where the model draws it (on its grid, within the limit),
    else `source_size`."""
    width, height = image.size
    if width % grid or height % grid or width * height > max_pixels:
        return source_size(image, native, max_pixels)
    return width, height


def over_todays_limits(job: Job, limits, name: str) -> UsageError | None:
    """Why a job made from a stored one (`again`, `vary`) is over today's limits, which may
    have been lowered since: refused with the limit named, never quietly cut down."""
    if job.steps > limits.max_steps:
        return UsageError(
            rich(
                "`{name}` keeps that picture's {steps} steps, over today's limit of {most} "
                "(`limits.max_steps`).",
                name=name,
                steps=job.steps,
                most=limits.max_steps,
            )
        )
    if job.width * job.height > limits.max_pixels:
        return UsageError(
            rich(
                "`{name}` keeps that picture's size, {width}×{height}, over today's limit of "
                "{most} (`limits.max_pixels`).",
                name=name,
                width=job.width,
                height=job.height,
                most=size_limit(limits.max_pixels),
            )
        )
    if job.count > limits.max_images:
        return UsageError(
            rich(
                "`{name}` keeps that set's {count} pictures, over today's limit of {most} at "
                "once (`limits.max_images`): reply to one of its pictures instead.",
                name=name,
                count=job.count,
                most=limits.max_images,
            )
        )
    return None


class Iterator:
    """Builds the jobs of commands that work on a picture; one per bot."""

    def __init__(self, client: AsyncClient | None, settings: Settings, db, catalogue: Catalogue):
        self.client, self.settings, self.db = client, settings, db
        self.catalogue = catalogue

    @property
    def limits(self) -> LimitSettings:
        return self.settings.limits

    async def job_for(
        self, room_id: str, event: dict, command, here: Here
    ) -> tuple[Job, str] | UsageError:
        """The job, and the prompt as the person typed it (for captions and the usage log);
        or why not."""
        is_generate = isinstance(command, Generate)
        # again/vary/upscale in a thread started on a picture are about that picture.
        reply = sources.replied_to(event.get("content") or {}, thread_root=not is_generate)
        if is_generate and reply is None:
            if command.strength is not None:
                return UsageError(
                    rich(
                        "`--strength` works in a reply to a picture: it says how much of that "
                        "picture is painted over."
                    )
                )
            return self._typed(self._resolve(command, here), command.prompt)
        if isinstance(command, Edit):  # asked before any download
            refused = editing.refusal(
                reply is not None, self.settings.matrix.command_prefix, self.catalogue
            )
            if refused is not None:
                return refused
        name = type(command).__name__.lower()
        if reply is None:
            return UsageError(
                rich(
                    "Reply to a picture with `{prefix} {name}` for that.",
                    prefix=self.settings.matrix.command_prefix,
                    name=name,
                )
            )
        try:
            picture = await sources.picture_event(self.client, room_id, reply)
        except sources.NotAPicture as exc:
            if is_generate and command.strength is None:
                # A reply to a text message: just a prompt.
                return self._typed(self._resolve(command, here), command.prompt)
            return UsageError(str(exc))
        except SourceError as exc:
            return UsageError(str(exc))
        posted = (
            await gallery.find(self.db, reply, room_id)
            if picture.get("sender") == self.client.user_id
            else None
        )
        if isinstance(command, (Again, Vary)) and posted is None:
            return UsageError(
                rich(
                    "`{name}` works on the pictures this bot made in this room; to start from "
                    "another picture, reply to it with `{prefix} <prompt>`.",
                    name=name,
                    prefix=self.settings.matrix.command_prefix,
                )
            )
        if isinstance(command, (Again, Vary)) and posted.job.kind == "upscale":
            return UsageError(
                rich(
                    "That picture is an upscale: reply to the picture it was made from for "
                    "`{name}`.",
                    name=name,
                )
            )
        if isinstance(command, Vary) and posted.picture is None:
            return UsageError(
                rich("That is a contact sheet: reply to one of its pictures for `vary`.")
            )
        try:
            source = await sources.fetch(
                self.client,
                sources.locator(picture["content"]),
                (picture["content"].get("info") or {}).get("size"),
                self.limits,
            )
        except SourceError as exc:
            return UsageError(str(exc))
        if isinstance(command, (Again, Vary)) and posted.job.prompt.startswith("sha256:"):
            # The usage log keeps no prompts: the picture itself carries its parameters.
            kept = read_parameters(source.data) if source.data[:4] == b"\x89PNG" else {}
            if "prompt" not in kept:
                return UsageError(
                    rich(
                        "This bot does not keep prompts (`usage.store_prompts` is off), and the "
                        "picture does not carry its own."
                    )
                )
            posted = dataclasses.replace(
                posted,
                prompt=kept["prompt"],
                job=dataclasses.replace(
                    posted.job,
                    prompt=kept["prompt"],
                    negative_prompt=kept.get("negative_prompt", ""),
                ),
            )
        # The source is a picture this bot posted and made by AI alone: what is made from it
        # may claim to be made by AI (generation.compliance.claims); `again` keeps its job's.
        own = posted is not None and posted.job.ai_only
        if isinstance(command, Upscale):
            return self._typed(
                self._upscale(command, source, posted, here),
                posted.prompt if posted else f"upscale {command.factor}x",
                own,
            )
        if isinstance(command, Again):
            return self._typed(await self._again(command, posted), posted.prompt)
        if isinstance(command, Vary):
            return self._typed(await self._vary(command, source, posted), posted.prompt, own)
        if isinstance(command, Edit):
            return self._typed(
                await self._edit(command, source, here, room_id, event, reply, posted),
                command.instruction,
                own,
            )
        return self._typed(await self._img2img(command, source, here), command.prompt, own)

    @staticmethod
    def _typed(
        job: Job | UsageError, prompt: str, source_own: bool = False
    ) -> tuple[Job, str] | UsageError:
        if isinstance(job, UsageError):
            return job
        return (dataclasses.replace(job, source_own=True) if source_own else job), prompt

    def _resolve(self, command: Generate, here: Here, edit: bool = False) -> Job | UsageError:
        return resolve(
            command,
            self.settings.generation,
            self.limits,
            self.catalogue,
            here.room,
            edit=edit,
            person=here.person,
        )

    def _model(self, job: Job) -> str:
        """The picture's model, or the default when that model is no longer configured."""
        return job.model if job.model in self.catalogue.models else ""

    async def _again(self, command: Again, posted: gallery.Posted) -> Job | UsageError:
        job = posted.job
        count = 1 if posted.picture is not None else job.count
        if job.kind in ("img2img", "edit"):
            try:
                job = await source_pictures.refetched(self.client, job, self.limits)
            except source_pictures.ReferenceUnusable as exc:
                return UsageError(
                    f"The reference picture this one was made with (the "
                    f"thread's first picture): {exc}"
                )
            except SourceError as exc:
                return UsageError(f"The picture this one was made from: {exc}")
        again = dataclasses.replace(
            job,
            seed=new_seed(count),
            count=count,
            model=self._model(job),
            enhance=bool(command.enhance or job.enhance),
        )
        return over_todays_limits(again, self.limits, "again") or again

    async def _vary(
        self, command: Vary, source: Source, posted: gallery.Posted
    ) -> Job | UsageError:
        job = posted.job
        catalogue = self.catalogue
        model = self._model(job) or catalogue.default_model
        only_edits = catalogue.only_edits(model)
        if only_edits:  # a picture it edited: vary is image-to-image
            return UsageError(only_edits)
        try:  # the grid: 8 for SD, 16 for FLUX and the other transformer families
            width, height = kept_size(
                source.image,
                catalogue.models[model],
                catalogue.family(model).multiple,
                self.limits.max_pixels,
            )
        except ValueError as exc:
            return UsageError(reason(exc) + ".")
        image = await asyncio.to_thread(fitted, source.image, width, height)
        varied = dataclasses.replace(
            job,
            kind="img2img",
            seed=new_seed(),
            count=1,
            width=width,
            height=height,
            strength=command.strength or VARY_STRENGTH,
            image=image,
            source=source.url,
            model=self._model(job),
            factor=1,
            enhance=bool(command.enhance or job.enhance),
        )
        return over_todays_limits(varied, self.limits, "vary") or varied  # its steps kept

    async def _edit(
        self,
        command: Edit,
        source: Source,
        here: Here,
        room_id: str,
        event: dict,
        reply: str,
        posted: gallery.Posted | None,
    ) -> Job | UsageError:
        catalogue = self.catalogue
        model = catalogue.edit_model
        job = self._resolve(editing.as_generate(command, model), here, edit=True)
        if isinstance(job, UsageError):
            return job
        try:
            references = await source_pictures.thread_references(
                self.client,
                room_id,
                event.get("content") or {},
                reply,
                catalogue.family(model).pictures,
                self.limits,
                made_from=(posted.job.source, *posted.job.references) if posted else (),
            )
        except SourceError as exc:
            return UsageError(str(exc))
        try:
            width, height = kept_size(
                source.image,
                catalogue.models[model],
                catalogue.family(model).multiple,
                self.limits.max_pixels,
            )
        except ValueError as exc:
            return UsageError(reason(exc) + ".")
        image = await asyncio.to_thread(fitted, source.image, width, height)
        return dataclasses.replace(
            job,
            kind="edit",
            width=width,
            height=height,
            image=image,
            source=source.url,
            style="",
            references=tuple(ref.url for ref in references),
            reference_images=tuple(ref.image for ref in references),
        )

    async def _img2img(self, command: Generate, source: Source, here: Here) -> Job | UsageError:
        job = self._resolve(command, here)
        if isinstance(job, UsageError):
            return job
        width, height = job.width, job.height
        if not (command.width or command.aspect):
            # Without --size or --ar, the new picture keeps the shape of the old one.
            try:
                width, height = source_size(
                    source.image, self.catalogue.models[job.model], self.limits.max_pixels
                )
            except ValueError as exc:
                return UsageError(reason(exc) + ".")
        image = await asyncio.to_thread(fitted, source.image, width, height)
        return dataclasses.replace(
            job,
            kind="img2img",
            width=width,
            height=height,
            image=image,
            source=source.url,
            strength=command.strength or DEFAULT_STRENGTH,
        )

    def _upscale(
        self, command: Upscale, source: Source, posted: gallery.Posted | None, here: Here
    ) -> Job | UsageError:
        width, height = source.image.size
        factor = command.factor
        most = self.limits.max_upscaled_pixels
        if max(width, height) * factor > MAX_UPSCALED_SIDE:
            return UsageError(
                f"{width}×{height} upscaled {factor}× would be "
                f"{width * factor}×{height * factor}; no side may be over "
                f"{MAX_UPSCALED_SIDE:,} pixels."
            )
        if width * height * factor**2 > most:
            fits = [f for f in (2, 4, 8) if width * height * f * f <= most]
            hint = (
                f"at most {fits[-1]}× for this picture"
                if fits
                else "this picture is too large to upscale"
            )
            return UsageError(
                f"{width}×{height} upscaled {factor}× would be "
                f"{width * factor}×{height * factor}, over the limit of "
                f"{most:,} pixels: {hint}."
            )
        base = posted.job if posted is not None else None
        picture = posted.picture if posted is not None and posted.picture is not None else 0
        return Job(
            prompt=base.prompt if base else "",
            negative_prompt=base.negative_prompt if base else "",
            seed=base.seed + picture if base else 0,
            steps=max(1, math.ceil(factor / 4)),  # passes, for the queue's estimate
            width=width * factor,
            height=height * factor,
            model="",
            kind="upscale",
            factor=factor,
            image=source.image,
            source=source.url,
            enhance=bool(command.enhance or here.merged.enhance),
            style=base.style if base else "",
        )
