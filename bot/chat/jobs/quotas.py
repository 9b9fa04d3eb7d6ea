"""Per-user quotas: pictures per hour and per day, counted from the usage log.

Pictures delivered count, and so do those still queued (else a person could queue past the
limit); failed, rejected and cancelled jobs do not.
"""

from __future__ import annotations

import json
import time

import aiosqlite

from bot.config import QuotaSettings
from bot.store import usage
from bot.store.usage import JobStatus
from bot.chat.language.rich import RichText, rich
from bot.text import plural

WINDOWS = (("hour", 3600, "pictures_per_hour"), ("day", 86400, "pictures_per_day"))


def _pictures(status: str, images: int, options: str) -> int:
    if status == JobStatus.OK:
        return images
    try:
        return int(json.loads(options).get("count", 1))
    except (ValueError, TypeError, AttributeError):
        return 1


async def refusal(
    db: aiosqlite.Connection,
    user_id: str,
    wanted: int,
    quotas: QuotaSettings,
    exempt: bool = False,
    now: float | None = None,
) -> RichText | None:
    """None when the user may have `wanted` more pictures now; else a notice saying when."""
    now = time.time() if now is None else now
    if exempt or all(getattr(quotas, key) is None for _, _, key in WINDOWS):
        return None
    rows = await usage.counted_for_quotas(
        db, user_id, now - max(seconds for _, seconds, _ in WINDOWS)
    )
    made = [(row[0], _pictures(row[1], row[2], row[3])) for row in rows]
    for name, seconds, key in WINDOWS:
        limit = getattr(quotas, key)
        if limit is None:
            continue
        recent = [(at, count) for at, count in made if at > now - seconds]
        used = sum(count for _, count in recent)
        if used + wanted <= limit:
            continue
        if wanted > limit:
            return rich(
                "You asked for {wanted} pictures at once; **the limit is {limit} per {name}**.",
                wanted=wanted,
                limit=limit,
                name=name,
            )
        # The moment enough of the oldest pictures leave the window for this request.
        need, freed, at = used + wanted - limit, 0, now
        for created, count in recent:
            freed += count
            if freed >= need:
                at = created + seconds
                break
        left = max(0, limit - used)
        now_part = (
            rich(
                "You can make {left} more now (with `--n {left}`), or {wanted} ",
                left=left,
                wanted=wanted,
            )
            if 0 < left < wanted
            else rich("You can go on ")
        )
        return rich(
            "You have {used} made or queued in the last {name}; the limit is {limit} per {name}. "
            "{now_part}**in {wait}** (at {at}).",
            used=plural(used, "picture"),
            name=name,
            limit=limit,
            now_part=now_part,
            wait=_duration(at - now),
            at=time.strftime("%H:%M %Z", time.localtime(at)),
        )
    return None


def _duration(seconds: float) -> str:
    minutes = max(1, round(seconds / 60))
    if minutes < 90:
        return plural(minutes, "minute")
    return f"{minutes / 60:.1f} hours"
