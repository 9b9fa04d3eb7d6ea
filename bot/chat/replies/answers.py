"""The commands answered with words (and a chart): help, styles, models, queue, cancel,
room defaults, usage, pause and resume. Who may do what is checked here."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import TYPE_CHECKING, Any

from generation.job import Job
from generation.postprocess.png import read_parameters
from generation.scheduling.pace import cost

from bot.store import db as database
from bot.matrix import direct, messages, power, sources
from bot.chat.language import editing, personal, precedence, rooms
from bot.chat.replies import report
from bot.store import gallery, personal_defaults, room_defaults, usage
from bot.chat.language import card
from bot.chat.language.commands import (
    Cancel,
    Help,
    Info,
    MeReset,
    MeSet,
    MeShow,
    Models,
    Pause,
    QueueStatus,
    Resume,
    RoomReset,
    RoomSet,
    RoomShow,
    Styles,
    Usage,
)
from bot.chat.language.help import admin_help, options_help, rooms_help, short_help
from bot.chat.language.rich import RichText, as_rich, bullets, lines, reason, rich
from bot.chat.jobs.status import NO_WORKER
from bot.chat.language.styles import listing
from bot.text import parse_since, plural, shorten

if TYPE_CHECKING:
    from nio import AsyncClient

    from generation.scheduling.queue import GenerationQueue

    from bot.chat.defaults import Defaults
    from bot.chat.jobs.pending import PendingJobs
    from bot.chat.language.resolve import Catalogue
    from bot.config import Settings

log = logging.getLogger(__name__)

PAUSED_KEY = "queue_paused"


def _short(prompt: str) -> RichText:
    # A prompt as typed: literal text, never markup.
    return as_rich(repr(shorten(prompt, 40)))


class Replies:
    """Answers the commands that are answered with words."""

    def __init__(
        self,
        client: AsyncClient,
        settings: Settings,
        db,
        queue: GenerationQueue,
        catalogue: Catalogue,
        pending: PendingJobs,
        defaults: Defaults,
    ):
        self.client, self.settings, self.db, self.queue = client, settings, db, queue
        self.catalogue = catalogue
        self.pending = pending  # whose prompt and room each queued job is
        self.defaults = defaults
        self.handlers = {
            Help: self.help,
            Styles: self.styles,
            Models: self.models,
            QueueStatus: self.queue_status,
            Cancel: self.cancel,
            Pause: self.pause,
            Resume: self.resume,
            MeShow: self.me_show,
            MeSet: self.me_set,
            MeReset: self.me_reset,
            RoomShow: self.room_show,
            RoomSet: self.room_set,
            RoomReset: self.room_reset,
            Usage: self.usage,
            Info: self.info,
        }

    async def answer(self, room_id: str, event: dict[str, Any], command) -> None:
        await self.handlers[type(command)](room_id, event, command)

    async def restore(self) -> None:
        """Take up the state that outlives a restart (an admin's pause)."""
        if await database.get_state(self.db, PAUSED_KEY) == "1":
            self.queue.pause()

    async def _say(
        self, room_id: str, event: dict[str, Any], text: messages.Formatted | str
    ) -> None:
        """A notice in reply to `event`, with its formatted body (a str is plain text)."""
        formatted = as_rich(text) if isinstance(text, str) else text
        await messages.send_notice(self.client, room_id, formatted, reply_to=event)

    # ---- everyone ------------------------------------------------------------------------

    async def help(self, room_id, event, command: Help) -> None:
        settings = self.settings
        prefix = settings.matrix.command_prefix
        can_edit = editing.available(self.catalogue)
        if command.topic == "options":
            await self._say(room_id, event, options_help(prefix, editing=can_edit))
            return
        if command.topic == "admin":
            await self._say(room_id, event, admin_help(prefix))
            return
        where = await self.defaults.here(room_id, event["sender"])
        here = rooms.in_effect(
            where.room, settings.generation, self.catalogue, where.person, settings.limits
        )
        if command.topic == "rooms":
            level = settings.rooms.defaults_power_level
            await self._say(room_id, event, rooms_help(prefix, level, here))
            return
        text = short_help(
            prefix,
            settings.limits,
            settings.quotas,
            here,
            editing=can_edit,
            admin=settings.matrix.is_admin(event["sender"]),
        )
        await self._say(room_id, event, text)

    async def styles(self, room_id, event, command) -> None:
        await self._say(room_id, event, listing(self.catalogue.styles))

    async def models(self, room_id, event, command) -> None:
        catalogue = self.catalogue
        rows = []
        for name, (width, height) in catalogue.models.items():
            default = rich(" — **the default**") if name == catalogue.default_model else ""
            family = catalogue.family(name)
            can_not = [
                what
                for what, missing in (
                    ("negative prompt", not family.negative_prompt),
                    ("guidance", family.guidance is None),
                )
                if missing
            ]
            rows.append(
                rich(
                    "`{name}`: {label}, native size {width}×{height}",
                    name=name,
                    label=family.label,
                    width=width,
                    height=height,
                )
                + (f", no {' or '.join(can_not)}" if can_not else "")
                + ("" if family.text_to_image else rich(", only edits (`edit`)"))
                + default
            )
        heading = rich(
            "**{models}** (use `--model NAME`):", models=plural(len(catalogue.models), "model")
        )
        await self._say(room_id, event, lines(heading, bullets(rows)))

    async def queue_status(self, room_id, event, command) -> None:
        queue, sender = self.queue, event["sender"]
        places = queue.places()
        running = [p for p in places if p.position == 0]
        waiting = [p for p in places if p.position > 0]
        rows: list[RichText | str] = [
            rich(
                "**The queue: {running} running, {waiting} waiting.**",
                running=len(running),
                waiting=len(waiting),
            )
        ]
        if queue.paused:
            rows.append(
                rich("It is **paused** by a bot admin: jobs wait until it is resumed (`resume`).")
            )
        if not queue.workers_up:
            rows.append(
                f"{NO_WORKER[0].upper()}{NO_WORKER[1:]}: jobs wait and start when one is back."
            )
        mine = [p for p in places if p.ticket.owner == sender]
        elsewhere = 0
        for place in mine:
            if self.pending.room_of(place.ticket) != room_id:
                elsewhere += 1  # a prompt from another room (a DM, say) is not repeated here
                continue
            what = _short(self.pending.prompt_of(place.ticket))
            if place.position == 0:
                rows.append(rich("Yours: {what} is **running now**.", what=what))
            elif place.eta_seconds is None:
                rows.append(
                    rich("Yours: {what} is **number {n}** in line.", what=what, n=place.position)
                )
            else:
                rows.append(
                    rich(
                        "Yours: {what} is **number {n}** in line, starting in about {eta:.0f} s.",
                        what=what,
                        n=place.position,
                        eta=place.eta_seconds,
                    )
                )
        if elsewhere:
            rows.append(f"You have {plural(elsewhere, 'more job')} in the queue from other rooms.")
        if not mine:
            rows.append("You have no jobs in the queue.")
        if queue.seconds_per_cost is not None:
            defaults = self.settings.generation
            width, height = defaults.width_height
            job = Job(prompt="", seed=0, steps=defaults.steps, width=width, height=height)
            rows.append(
                f"Speed: about {cost(job) * queue.seconds_per_cost:.1f} s for a "
                f"{job.width}×{job.height} picture at {job.steps} steps."
            )
        if mine:
            rows.append(rich("`cancel` cancels your queued jobs."))
        await self._say(room_id, event, lines(*rows))

    async def cancel(self, room_id, event, command) -> None:
        sender = event["sender"]
        taken = self.queue.cancel(lambda ticket: ticket.owner == sender)
        if taken:
            # Their deliveries drop them from `pending` only when they next run, after this,
            # so prompts and rooms are still known; other rooms' prompts stay there.
            names = [
                _short(self.pending.prompt_of(t))
                for t in taken
                if self.pending.room_of(t) == room_id
            ]
            if len(names) < len(taken):
                names.append(as_rich(f"{len(taken) - len(names)} from other rooms"))
            text = rich(
                "**Cancelled {jobs}**: {names}.",
                jobs=plural(len(taken), "queued job"),
                names=RichText((", ",)).join(names),
            )
        else:
            text = rich("You have no queued jobs to cancel.")
        running = [p for p in self.queue.places() if p.position == 0 and p.ticket.owner == sender]
        if running:
            text += " Your running job will finish (redact its command to drop its picture)."
        await self._say(room_id, event, text)

    # ---- a picture's card ----------------------------------------------------------------

    async def info(self, room_id, event, command: Info) -> None:
        """`!img info` in reply to one of the bot's pictures (or in a thread started on one):
        its card; anything else gets one notice saying what it works on."""
        # As again/vary/upscale: a thread started on a picture is about that picture.
        reply = sources.replied_to(event.get("content") or {}, thread_root=True)
        shown = None if reply is None else await self.card_for(room_id, reply)
        if shown is None:
            prefix = self.settings.matrix.command_prefix
            await self._say(
                room_id,
                event,
                rich(
                    "`{prefix} info` works in reply to a picture this bot made in this room "
                    "(or to its contact sheet), while the bot still has its record: it tells "
                    "how the picture was made, and the command that makes it again.",
                    prefix=prefix,
                ),
            )
            return
        await self._say(room_id, event, shown)

    async def card_for(self, room_id: str, picture_id: str) -> card.Card | None:
        """The card of the bot's picture (or contact sheet) `picture_id` in this room; None
        when it is not one of the bot's pictures here, or its record has expired. For
        `!img info` and the ℹ️ reaction alike; send it with `plain()` as the body and
        `html()` as the formatted body."""
        posted = await gallery.find(self.db, picture_id, room_id)
        if posted is None:
            return None
        try:
            # Still there: a picture a moderator removed (redacted) has no card.
            await sources.picture_event(self.client, room_id, picture_id)
        except sources.SourceError:
            return None
        row = await gallery.usage_of(self.db, picture_id, room_id)
        asked = (
            None
            if row is None
            else card.Asked(
                row["user_id"],
                row["created_at"],
                row["queue_seconds"],
                row["generation_seconds"],
                row["worker"],
            )
        )
        params: dict[str, Any] = {}
        if posted.prompt.startswith(card.HASHED):
            # The log keeps no prompts: the picture may carry its own (compliance.embed_prompt).
            params = await self._parameters(room_id, picture_id)
        made = card.Made(posted.job, posted.prompt, posted.picture, asked, params)
        return card.card(made, self.catalogue, self.settings.matrix.command_prefix)

    async def _parameters(self, room_id: str, picture_id: str) -> dict[str, Any]:
        """The parameters embedded in the bot's picture; {} when it carries none, or it
        cannot be fetched now (the card then says the prompt is not kept)."""
        try:
            picture = await sources.picture_event(self.client, room_id, picture_id)
            fetched = await sources.fetch(
                self.client,
                sources.locator(picture["content"]),
                (picture["content"].get("info") or {}).get("size"),
                self.settings.limits,
            )
        except sources.SourceError as exc:
            log.info("the parameters of picture %s could not be read: %s", picture_id, exc)
            return {}
        if fetched.data[:4] != b"\x89PNG":
            return {}
        try:
            return await asyncio.to_thread(read_parameters, fetched.data)
        except (ValueError, OSError) as exc:  # a PNG whose text is not ours
            log.info("picture %s carries no readable parameters: %s", picture_id, exc)
            return {}

    # ---- each person's own defaults ------------------------------------------------------

    async def _effects(self, room_id: str, sender: str) -> dict[str, precedence.Effect]:
        where = await self.defaults.here(room_id, sender)
        settings = self.settings
        return precedence.in_effect(
            where.room,
            where.person,
            settings.generation,
            settings.limits,
            self.catalogue,
            buttons=bool(settings.chat.buttons),
        )

    async def me_show(self, room_id, event, command: MeShow) -> None:
        sender = event["sender"]
        values = await personal_defaults.stored(self.db, sender)
        _, ignored = await self.defaults.of_person(sender)
        effects = await self._effects(room_id, sender)
        await self._say(room_id, event, personal.describe(values, ignored, effects))

    async def me_set(self, room_id, event, command: MeSet) -> None:
        sender = event["sender"]
        try:
            value = personal.canonical(
                command.key, command.value, self.settings.limits, self.catalogue
            )
        except ValueError as exc:
            await self._say(room_id, event, personal.refusal(exc))
            return
        await personal_defaults.store(self.db, sender, command.key, value)
        effects = await self._effects(room_id, sender)
        await self._say(
            room_id, event, personal.confirm_set(command.key, value, effects[command.key])
        )

    async def me_reset(self, room_id, event, command: MeReset) -> None:
        removed = await personal_defaults.clear(self.db, event["sender"], command.key)
        await self._say(room_id, event, personal.confirm_reset(command.key, removed))

    # ---- room moderators -----------------------------------------------------------------

    async def room_show(self, room_id, event, command) -> None:
        values = await room_defaults.stored(self.db, room_id)
        _, ignored = rooms.usable(values, self.settings.limits, self.catalogue)
        await self._say(
            room_id,
            event,
            rooms.describe(
                values,
                ignored,
                self.settings.generation,
                self.catalogue,
                buttons=bool(self.settings.chat.buttons),
            ),
        )

    async def _may_change_room(self, room_id: str, event: dict[str, Any]) -> bool:
        sender = event["sender"]
        if self.settings.matrix.is_admin(sender):
            return True
        needed = self.settings.rooms.defaults_power_level
        level = await power.power_level(self.client, room_id, sender)
        if level is None:
            await self._say(
                room_id,
                event,
                "I could not read this room's power levels from "
                "the homeserver; try again in a moment.",
            )
            return False
        if level >= needed:
            return True
        await self._say(
            room_id,
            event,
            rich(
                "Only members with **power level {needed}** or more in this room (moderators) "
                "and bot admins may change its defaults; yours is {level}.",
                needed=needed,
                level=level,
            ),
        )
        return False

    async def room_set(self, room_id, event, command: RoomSet) -> None:
        if not await self._may_change_room(room_id, event):
            return
        try:
            value = rooms.canonical(
                command.key, command.value, self.settings.limits, self.catalogue
            )
        except ValueError as exc:
            await self._say(room_id, event, reason(exc).rstrip(".") + ".")
            return
        defaults = self.settings.generation
        if command.key == "negative":
            refusal = rooms.negative_refusal(
                value, await room_defaults.stored(self.db, room_id), defaults
            )
            if refusal is not None:
                await self._say(room_id, event, refusal)
                return
        await room_defaults.store(self.db, room_id, command.key, value, event["sender"])
        await self._say(
            room_id,
            event,
            rich("This room's {key} is now **{value}**. ", key=command.key, value=value)
            + await self._resting(room_id, command.key)
            + rich("`room` shows all its defaults."),
        )

    async def _resting(self, room_id: str, changed: str | None) -> RichText:
        """A word when a change of guidance leaves the room's negative prompt unused."""
        if changed != "guidance":
            return RichText()
        why = rooms.resting(await room_defaults.stored(self.db, room_id), self.settings.generation)
        return RichText() if why is None else rich("Its negative prompt is not used now: {}. ", why)

    async def room_reset(self, room_id, event, command: RoomReset) -> None:
        if not await self._may_change_room(room_id, event):
            return
        removed = await room_defaults.clear(self.db, room_id, command.key)
        what = f"{command.key} is" if command.key else "defaults are"
        text = rich(
            "This room's {what} **the bot's again** ({removed} removed). ",
            what=what,
            removed=plural(removed, "setting"),
        ) + await self._resting(room_id, command.key)
        await self._say(room_id, event, text.rstrip(" "))

    # ---- bot admins ----------------------------------------------------------------------

    async def _admin(self, room_id: str, event: dict[str, Any], what: str) -> bool:
        if self.settings.matrix.is_admin(event["sender"]):
            return True
        await self._say(
            room_id,
            event,
            rich(
                "Only **bot admins** may {what}; they are listed in the bot's config file "
                "(`matrix.admins`).",
                what=what,
            ),
        )
        return False

    async def pause(self, room_id, event, command) -> None:
        if not await self._admin(room_id, event, "pause the queue"):
            return
        # Stored first: a full disk refuses it before the queue has changed.
        await database.set_state(self.db, PAUSED_KEY, "1")
        self.queue.pause()
        await self._say(
            room_id,
            event,
            rich(
                "**The queue is paused**: commands are still taken and wait until a bot "
                "admin sends `resume`."
            ),
        )

    async def resume(self, room_id, event, command) -> None:
        if not await self._admin(room_id, event, "resume the queue"):
            return
        await database.set_state(self.db, PAUSED_KEY, "0")
        self.queue.resume()
        await self._say(
            room_id,
            event,
            rich("**The queue runs again** ({jobs} in it).", jobs=plural(self.queue.depth, "job")),
        )

    async def usage(self, room_id, event, command: Usage) -> None:
        if not await self._admin(room_id, event, "see the usage report"):
            return
        where = await self._report_room(room_id, event["sender"])
        if where is None:
            await self._say(
                room_id,
                event,
                "The usage report names every user and room, so "
                "it goes to a direct message, and I could not open one with you "
                "just now; try again in a moment, or ask me in a direct message.",
            )
            return
        now = time.time()
        since = parse_since(command.span, now)
        user = command.user and self.settings.matrix.full_user_id(command.user)
        rows = await usage.query(self.db, since=since, user=user)
        label = "over all time" if since is None else f"in the last {_span_words(command.span)}"
        names = {room.room_id: room.display_name for room in self.client.rooms.values()}
        text, html = report.usage_report(
            rows, span_label=label, user=user, now=now, room_names=names
        )
        # A reply only in the room of the command: a reply cannot point into another room.
        answer = event if where == room_id else None
        sent = await messages.send_notice(self.client, where, text, reply_to=answer, html=html)
        days = None if since is None else max(1, math.ceil((now - since) / 86400))
        chart = await asyncio.to_thread(report.pictures_per_day_chart, rows, days=days, now=now)
        await messages.send_image(
            self.client,
            where,
            messages.Picture(chart, report.WIDTH, report.HEIGHT),
            filename="imgbot-usage.png",
            caption=f"Pictures per day {label}",
            reply_to=answer,
        )
        if where != room_id:
            await self._say(
                room_id,
                event,
                "Sent you the usage report in a direct message."
                if sent is not None
                else "The usage report could not be sent to "
                "your direct message with me; try again in a moment.",
            )

    async def _report_room(self, room_id: str, admin: str) -> str | None:
        """Where `admin`'s usage report goes: this room when the config names it
        (rooms.usage_report_rooms), else the direct room the bot made with them (this room
        when asked there); None when none can be had now. A room that only the two of them
        are in is not enough: whoever made it chose its join rules and history visibility,
        and a stranger may have made it public with a world-readable history, invited
        both, and left."""
        client = self.client
        if room_id in self.settings.rooms.usage_report_rooms:
            return room_id
        try:
            return await direct.direct_room(
                client,
                database.Kept(self.db, direct.STATE_KEY + admin),
                admin,
                encrypted=client.olm is not None,
            )
        except direct.DirectRoomFailed as exc:
            log.warning("no direct room with %s for the usage report: %s", admin, exc)
            return None


def _span_words(span: str) -> str:
    number, unit = int(span[:-1]), span[-1]
    word = {"m": "minute", "h": "hour", "d": "day", "w": "week"}[unit]
    return plural(number, word) if number != 1 else word
