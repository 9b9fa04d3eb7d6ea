"""The bench's run through a real homeserver and the bot: it measures and prints, it does
not judge speed (CI's CPU says nothing about a GPU's)."""

from __future__ import annotations

import asyncio
import math

import pytest

from bot.local.bench_matrix import through_matrix

pytestmark = pytest.mark.synapse


async def test_through_matrix_reports_rates_idle_share_and_overheads(engine):
    figures = await asyncio.to_thread(
        through_matrix, engine, count=4, width=64, height=64, steps=2, guidance=0.0
    )
    assert figures.pictures == 4 and len(figures.overheads) == 4
    assert figures.busy_seconds > 0 and figures.wall_seconds > 0
    assert 0 <= figures.idle_share < 1
    assert all(math.isfinite(o) for o in figures.overheads)
    table = figures.table()
    print(table)
    for words in (
        "pictures per second",
        "engine's own rate",
        "idle while jobs waited",
        "reply overhead per picture",
        "of which, per picture: ",
    ):
        assert words in table
    # The bot's own phases were timed: each picture was encoded, uploaded and sent.
    assert {"encode", "upload", "send picture"} <= set(figures.phases)
    assert all(seconds > 0 for seconds in figures.phases.values())
