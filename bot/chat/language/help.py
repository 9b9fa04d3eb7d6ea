"""`!img help`: a short page that fits a phone screen (what people do, this room's limits and
defaults, where to read more), and its topics (`help options`, `help rooms`, `help admin`)
with the rest. Pure: the caller passes what it knows of the room and the person."""

from __future__ import annotations

from bot.chat.language.options import OPTIONS, size_limit
from bot.chat.language.rich import RichText, bullets, code, lines, rich
from bot.chat.language.subcommands import PERSONAL, ROOM, SUBCOMMANDS
from bot.config import LimitSettings, QuotaSettings


def short_help(
    prefix: str,
    limits: LimitSettings,
    quotas: QuotaSettings | None = None,
    here: RichText | str = "",
    *,
    editing: bool = False,
    admin: bool = False,
) -> RichText:
    """The help: the things people do, the limits and defaults in this room (`here`, from
    bot.chat.language.rooms.in_effect), and the topics. `edit` is in it only when the bot
    can edit (bot.chat.language.editing.available); `help admin` only for a bot admin."""
    p = prefix
    on_a_picture = [
        rich("`{p} again` — one of my pictures again, with a new seed", p=p),
        rich("`{p} vary` — a variation of one of my pictures", p=p),
        rich("`{p} upscale` — any picture, 4× larger", p=p),
        *([rich("`{p} edit <what to change>` — any picture, changed as you say", p=p)] * editing),
        rich("`{p} <prompt>` — any picture, painted over", p=p),
    ]
    more = [
        rich("`{p} help options` (all the options)", p=p),
        rich("`{p} help rooms` (room defaults and yours)", p=p),
        *([rich("`{p} help admin` (pause, usage)", p=p)] * admin),
    ]
    rows: list[RichText | str] = [
        rich("**Draw:** `{p} <prompt>`, e.g. `{p} a lighthouse at dawn --ar 16:9`", p=p),
        rich("**Reply to a picture** with:"),
        bullets(on_a_picture),
        # A reaction works whether or not the bot placed it as a button (chat.buttons).
        rich(
            "**Or tap a button** under a picture of mine, or react with it yourself: 🔁 again, "
            "🎲 vary, 🔍 upscale, ✨ enhance, ℹ️ how it was made, 🗑️ remove yours."
        ),
        rich(
            "**Your own defaults**, in every room: `{p} me` shows them, "
            "`{p} me set KEY VALUE` sets one.",
            p=p,
        ),
        rich(
            "**Queue:** `{p} queue` shows the wait and your jobs, `{p} cancel` cancels "
            "your queued ones.",
            p=p,
        ),
        here,
        limits_line(limits),
        quota_line(quotas),
        rich("More: ") + RichText((", ",)).join(more) + ".",
    ]
    return lines(*(row for row in rows if row))


def limits_line(limits: LimitSettings) -> RichText:
    return rich(
        "**Limits:** prompts up to {chars:,} characters, {steps} steps, pictures up to "
        "{size}, {images} at once, {queued} queued jobs a person.",
        chars=limits.max_prompt_chars,
        steps=limits.max_steps,
        size=size_limit(limits.max_pixels),
        images=limits.max_images,
        queued=limits.per_user_queued,
    )


def quota_line(quotas: QuotaSettings | None) -> RichText:
    """The pictures a person may make an hour and a day, or nothing when there is no quota."""
    per = (
        [
            f"{n} per {span}"
            for n, span in ((quotas.pictures_per_hour, "hour"), (quotas.pictures_per_day, "day"))
            if n is not None
        ]
        if quotas
        else []
    )
    if not per:
        return RichText()
    return rich("**Quota:** {per} pictures per person.", per=" and ".join(per))


def options_help(prefix: str, *, editing: bool = False) -> RichText:
    """`help options`: every option, the commands on a picture with theirs, and the rest of
    what the short help leaves out."""
    p = prefix
    options = [
        code(f"--{opt.name}{' ' + opt.takes if opt.takes else ''}") + " — " + rich(opt.help)
        for opt in OPTIONS.values()
    ]
    on_a_picture = [
        code(f"{p} {sub.name}") + " — " + rich(sub.help)
        for sub in SUBCOMMANDS.values()
        if sub.name in ("again", "vary", "upscale", "edit", "info")
        and (editing or not sub.needs_editing)
    ]
    return lines(
        rich("**Options**, after the prompt, in any order (`{p} <prompt> [options]`):", p=p),
        bullets(options),
        rich("**On a picture:**"),
        bullets(on_a_picture),
        rich(
            "`{p} styles` lists the styles, `{p} models` the models. A command's word starts "
            'a prompt when it is in quotes: `{p} "cancel" culture, oil painting`.',
            p=p,
        ),
        rich(
            "A job that waits or takes a while gets one status notice, edited as it goes (its "
            "place, then its steps and the time left); a quick one shows the bot typing. "
            "Redacting a command that is still queued cancels it. A command in a thread is "
            "answered in the thread."
        ),
    )


def rooms_help(prefix: str, power_level: int, here: RichText | str = "") -> RichText:
    """`help rooms`: a room's defaults, and who may set them (`rooms.defaults_power_level`);
    each person's own, which a room's come before."""
    p = prefix
    keys = ROOM.listed
    return lines(
        rich("**Room defaults:** what `{p} <prompt>` uses in this room when it does not say.", p=p),
        bullets(
            [
                rich("`{p} room` shows them, and who set each", p=p),
                rich("`{p} room set KEY VALUE` sets one, with KEY one of {keys}", p=p, keys=keys),
                rich("`{p} room reset [KEY]` clears one, or all", p=p),
            ]
        ),
        rich(
            "**Who:** members with power level {level} or more in the room (moderators) and "
            "bot admins set and reset them; everyone sees them.",
            level=power_level,
        ),
        rich(
            "`nsfw` can only make the safety check stricter (`blur` or `block`); "
            "`buttons off` leaves the buttons out under this room's pictures."
        ),
        rich(
            "**Your own defaults:** `{p} me` shows them, `{p} me set KEY VALUE` sets one for "
            "every room and DM, with KEY one of {keys}; `{p} me reset [KEY]` clears them.",
            p=p,
            keys=PERSONAL.listed,
        ),
        rich(
            "**Which wins:** a command's own options, then the room's defaults, then yours, "
            "then the bot's."
        ),
        here,
    )


def admin_help(prefix: str) -> RichText:
    """`help admin`: what bot admins (`matrix.admins` in the config) may do."""
    p = prefix
    return lines(
        rich("**For bot admins** (`matrix.admins` in the bot's config file):"),
        bullets(
            [
                rich("`{p} pause` — hold the queue (commands still queue)", p=p),
                rich("`{p} resume` — let the queue run again", p=p),
                rich(
                    "`{p} usage [7d|30d|all] [@user]` — the usage report, in a direct message",
                    p=p,
                ),
            ]
        ),
    )
