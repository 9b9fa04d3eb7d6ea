"""`imgbot usage`: the usage log as a table, CSV or JSON, per job or per user, room or day;
with --defaults, who has personal defaults (`!img me set`) and what they set.

The store reads and totals the rows (bot.store.usage); the words and columns are made here.
What users typed is untrusted: a CSV cell that starts like a formula gets a single quote
before it (so a user ID reads '@bob:example.org there), JSON keeps every value as it is but
writes a control, format or line-separator character as a \\uXXXX escape, and the table
shows no such character.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sys
import time
import unicodedata
from datetime import datetime
from typing import Any

from bot.chat.language.subcommands import PERSONAL_KEYS
from bot.cli.common import settings_of
from bot.store.personal_defaults import Holder
from bot.store.usage import group, totals
from bot.text import parse_since, shorten


def add_parser(sub) -> None:
    use = sub.add_parser("usage", help="review the usage log")
    use.add_argument("-c", "--config", required=True)
    use.add_argument("--since", default="7d", help="30m, 24h, 7d, 4w or all (default 7d)")
    use.add_argument(
        "--user",
        help="only this user: a whole ID (@bob:example.org), or bob "
        "or @bob for one on the bot's own server",
    )
    use.add_argument("--room", help="only this room ID")
    use.add_argument("--format", choices=("table", "csv", "json"), default="table")
    use.add_argument(
        "--by",
        choices=("user", "room", "day"),
        help="one line per user, room or day instead of one per job",
    )
    use.add_argument(
        "--defaults",
        action="store_true",
        help="instead of the usage log: who has personal defaults (`!img me set`) and what "
        "they set, whenever set (--since does not apply); with --user only that person",
    )
    use.set_defaults(run=cmd_usage)


def cmd_usage(args) -> int:
    from bot.store import db as database
    from bot.store import personal_defaults, usage

    if args.defaults and (args.by or args.room):
        print("imgbot usage: --defaults lists people, not jobs: no --by or --room", file=sys.stderr)
        return 2
    settings = settings_of(args, secrets=False)  # a review never logs in
    try:
        since = parse_since(args.since)
    except ValueError as exc:
        print(f"imgbot usage: --since {exc}", file=sys.stderr)
        return 2
    user = settings.matrix.full_user_id(args.user) if args.user else None
    if user != args.user:
        print(f"imgbot usage: --user {args.user} is {user}", file=sys.stderr)
    path = settings.state_dir / "imgbot.sqlite3"
    if not path.exists():
        print(f"imgbot usage: no usage log at {path} yet", file=sys.stderr)
        return 1

    async def read():
        # Read-only: a review never migrates, locks or changes the bot's database.
        db = await database.connect_readonly(path)
        try:
            if args.defaults:
                return await personal_defaults.holders(db)
            return await usage.query(db, since=since, user=user, room=args.room)
        finally:
            await db.close()

    try:
        stopped = not database.wal_in_use(path)
        rows = asyncio.run(read())
        if stopped and database.wal_in_use(path):
            rows = asyncio.run(read())  # a bot started meanwhile: read through its WAL
    except database.SchemaMismatch as exc:
        print(f"imgbot usage: {path}: {exc}", file=sys.stderr)
        return 1
    if args.defaults:
        print(render_defaults([h for h in rows if user in (None, h.user_id)], args.format))
    elif args.by:
        print(render_grouped(rows, args.by, args.format, user=user))
    else:
        print(render(rows, args.format, user=user))
    return 0


# ---- the output ------------------------------------------------------------------------------

# The usage table's columns, for the CSV header when no row carries them. The times come
# as ISO 8601 with the zone, each followed by the same time as a unix epoch.
FIELDS = (
    "id",
    "created_at",
    "created_at_epoch",
    "finished_at",
    "finished_at_epoch",
    "event_id",
    "room_id",
    "user_id",
    "prompt",
    "options",
    "seed",
    "model",
    "status",
    "error",
    "images",
    "queue_seconds",
    "generation_seconds",
    "compliance",
    "worker",
    "status_event",
    "deleted_at",
    "deleted_at_epoch",
    "deleted_by",
)
COLUMNS = (
    "time",
    "user",
    "room",
    "status",
    "images",
    "seed",
    "model",
    "queue_s",
    "gen_s",
    "prompt",
)
_JSON_COLUMNS = ("options", "compliance")  # JSON text in the database


def iso_time(epoch: float | None) -> str | None:
    """2026-11-21T14:03:07+01:00: the machine's local time, as the table shows it."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds")


def zone_of(epochs: list[float]) -> str:
    """The zone the table's local times are in, e.g. "CET, UTC+01:00" (both of a summer
    and a winter time when the rows span a change)."""
    labels = []
    for epoch in epochs or [time.time()]:
        moment = datetime.fromtimestamp(epoch).astimezone()
        offset = moment.strftime("%z")
        utc = "UTC" if offset == "+0000" else f"UTC{offset[:3]}:{offset[3:]}"
        name = moment.tzname() or ""
        label = utc if name in ("UTC", "") or name[0] in "+-" else f"{name}, {utc}"
        if label not in labels:
            labels.append(label)
    return " / ".join(labels)


def exported(row: dict[str, Any], *, parse_json: bool) -> dict[str, Any]:
    """A usage row for CSV or JSON: ISO times beside the epochs; options and compliance as
    JSON values in JSON (CSV keeps their JSON text in one cell)."""
    out: dict[str, Any] = {}
    for name, value in row.items():
        if name in ("created_at", "finished_at", "deleted_at"):
            out[name], out[name + "_epoch"] = iso_time(value), value
        elif parse_json and name in _JSON_COLUMNS and isinstance(value, str):
            out[name] = json.loads(value)
        else:
            out[name] = value
    return out


def _display_row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "time": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["created_at"])),
        "user": row["user_id"],
        "room": row["room_id"] or "",
        "status": row["status"],
        "images": row["images"],
        "seed": "" if row["seed"] is None else row["seed"],
        "model": row["model"] or "",
        "queue_s": "" if row["queue_seconds"] is None else f"{row['queue_seconds']:.2f}",
        "gen_s": "" if row["generation_seconds"] is None else f"{row['generation_seconds']:.2f}",
        "prompt": row["prompt"],
    }


def summary(rows: list[dict[str, Any]], user: str | None = None) -> str:
    total = totals("", rows)
    return (
        f"{total.jobs} jobs, {total.pictures} pictures, {total.users} users, "
        f"{total.failed} failed, {total.rejected} rejected, "
        f"{total.gpu_seconds:.1f} GPU seconds" + (f" (user {user})" if user else "")
    )


# What makes a spreadsheet read a cell as a formula (OWASP, "CSV Injection"): a prompt
# "=HYPERLINK(…)" or a federated user ID "@SUM(…)" would run when the admin opens the file.
# Spreadsheets also read one after leading spaces, and some take the fullwidth signs (as an
# East Asian keyboard types them) for the plain ones.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def spreadsheet_safe(value: Any) -> Any:
    """A text cell whose first character that shows starts a formula, with a single quote
    before it: spreadsheets show it as text. Numbers stay numbers (a negative one is not a
    formula)."""
    if isinstance(value, str) and (
        value.startswith(_FORMULA_STARTS) or _from_first_shown(value).startswith(_FORMULA_STARTS)
    ):
        return "'" + value
    return value


def _from_first_shown(text: str) -> str:
    """The text from its first character that is neither a space nor invisible (Cf)."""
    for i, c in enumerate(text):
        if not (c.isspace() or unicodedata.category(c) == "Cf"):
            return text[i:]
    return ""


def _csv(records: list[dict[str, Any]], fieldnames: list[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fieldnames)
    writer.writeheader()
    writer.writerows({k: spreadsheet_safe(v) for k, v in r.items()} for r in records)
    return out.getvalue()


# Controls (an escape sequence moves the cursor or recolours the terminal), format
# characters (direction overrides disguise what a line says) and line separators.
_UNPRINTABLE = ("Cc", "Cf", "Zl", "Zp")


def json_text(value: Any) -> str:
    """`value` as indented JSON with every other character as it is (ensure_ascii=False),
    but a control (C1 ones such as U+009B, which a terminal reads as an escape sequence),
    format (a direction override) or line-separator character as a \\uXXXX escape: the same
    JSON, and no string in it can steer the terminal it is printed on. JSON escapes C0
    controls itself (its own line breaks are the indentation's), and these characters
    occur only inside strings."""
    return "".join(
        _json_escape(c) if c > "\x7e" and unicodedata.category(c) in _UNPRINTABLE else c
        for c in json.dumps(value, indent=2, ensure_ascii=False)
    )


def _json_escape(char: str) -> str:
    units = char.encode("utf-16-be")  # a surrogate pair above U+FFFF, as JSON writes it
    return "".join(f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2))


def printable(text: str) -> str:
    """One line the terminal shows as it is: a control or line break is a space, and a
    format character (invisible anyway) is dropped."""
    return "".join(
        "" if category == "Cf" else " " if category in _UNPRINTABLE else c
        for c in text
        for category in (unicodedata.category(c),)
    )


def _table(
    shown: list[dict[str, Any]], columns: tuple[str, ...], headings: dict[str, str] | None = None
) -> list[str]:
    heads = {c: (headings or {}).get(c, c) for c in columns}
    # Every cell comes from the usage log, and its prompts from chat: untrusted text.
    cells = [{c: printable(str(r[c])) for c in columns} for r in shown]
    widths = {c: max([len(heads[c])] + [len(r[c]) for r in cells]) for c in columns}
    lines = ["  ".join(heads[c].ljust(widths[c]) for c in columns)]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in columns) for r in cells]
    return lines


def render(rows: list[dict[str, Any]], fmt: str, user: str | None = None) -> str:
    """One line per job as a table (with its zone and a summary), CSV or JSON."""
    if fmt == "json":
        return json_text([exported(r, parse_json=True) for r in rows])
    if fmt == "csv":
        records = [exported(r, parse_json=False) for r in rows]
        return _csv(records, list(records[0]) if records else list(FIELDS))
    shown = [_display_row(r) for r in rows]
    for row in shown:  # keep the table readable; csv and json carry the whole prompt
        row["prompt"] = shorten(row["prompt"], 40)
    zone = zone_of([r["created_at"] for r in rows])
    return "\n".join(_table(shown, COLUMNS, {"time": f"time ({zone})"}) + [summary(rows, user)])


def group_columns(by: str) -> tuple[str, ...]:
    # A user's group always has one user and a room's one room: show the other count.
    return (
        by,
        "jobs",
        "pictures",
        "failed",
        "rejected",
        "cancelled",
        "gpu_seconds",
        "mean_queue_seconds",
        "rooms" if by == "user" else "users",
    )


def render_grouped(rows: list[dict[str, Any]], by: str, fmt: str, user: str | None = None) -> str:
    """One line per user, room or day (see `group`) as a table (with a summary), CSV or JSON;
    a day is the machine's local day, and the table says in which zone."""
    columns = group_columns(by)
    records = [{by: g.key, **{c: getattr(g, c) for c in columns[1:]}} for g in group(rows, by)]
    if fmt == "json":
        return json_text(records)
    if fmt == "csv":
        return _csv(records, list(columns))
    wait = "mean_queue_seconds"
    shown = [
        {
            **r,
            by: r[by] or "-",
            "gpu_seconds": f"{r['gpu_seconds']:.1f}",
            wait: "" if r[wait] is None else f"{r[wait]:.2f}",
        }
        for r in records
    ]
    headings = {"day": f"day ({zone_of([r['created_at'] for r in rows])})"}
    return "\n".join(_table(shown, columns, headings) + [summary(rows, user)])


def render_defaults(holders: list[Holder], fmt: str) -> str:
    """One line per person with defaults, a column a key (as they typed it) and when they
    last changed one, as a table (with a count), CSV or JSON. What they typed is untrusted,
    as prompts are."""
    keys = list(PERSONAL_KEYS)
    keys += sorted({key for h in holders for key in h.values} - set(keys))  # an older key
    if fmt == "json":
        return json_text(
            [
                {
                    "user_id": h.user_id,
                    "defaults": h.values,
                    "last_set": iso_time(h.last_set),
                    "last_set_epoch": h.last_set,
                }
                for h in holders
            ]
        )
    if fmt == "csv":
        records = [
            {
                "user_id": h.user_id,
                **{key: h.values.get(key, "") for key in keys},
                "last_set": iso_time(h.last_set),
                "last_set_epoch": h.last_set,
            }
            for h in holders
        ]
        return _csv(records, ["user_id", *keys, "last_set", "last_set_epoch"])
    shown = [
        {
            "user": h.user_id,
            **{key: shorten(h.values.get(key, "-"), 24) for key in keys},
            "last_set": time.strftime("%Y-%m-%d %H:%M", time.localtime(h.last_set)),
        }
        for h in holders
    ]
    zone = zone_of([h.last_set for h in holders])
    count = f"{len(holders)} {'person has' if len(holders) == 1 else 'people have'} own defaults"
    return "\n".join(
        _table(shown, ("user", *keys, "last_set"), {"last_set": f"last set ({zone})"}) + [count]
    )
