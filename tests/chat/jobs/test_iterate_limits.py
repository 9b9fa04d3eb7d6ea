"""`again` and `vary` keep an old job's steps (and `again` its size and count): today's limits,
which may have been lowered since the picture was made, are checked again, and a job over
them is refused with the limit named (never quietly cut down). The Iterator with today's
settings and a stored job as the gallery gives it back; no homeserver needed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from PIL import Image

from generation.job import Job

from bot.chat.language.commands import Again, Vary, UsageError
from bot.chat.jobs.iterate import Iterator
from bot.chat.language.resolve import Catalogue
from bot.config import LimitSettings
from bot.matrix.sources import Source
from bot.store.gallery import Posted

TODAY = LimitSettings(max_steps=20, max_pixels=512 * 512, max_images=2)
MADE = Job(prompt="a cat", seed=7, steps=8, width=512, height=512, count=1, model="m")


def iterator() -> Iterator:
    return Iterator(
        client=None,
        settings=SimpleNamespace(limits=TODAY),
        db=None,
        catalogue=Catalogue("m", {"m": (512, 512)}),
    )


def posted(picture: int | None = 0, **made) -> Posted:
    return Posted(Job(**{**MADE.__dict__, **made}), "a cat", picture)


SOURCE = Source("mxc://example.org/picture", Image.new("RGB", (512, 512)), b"")


@pytest.mark.parametrize(
    "made, picture, says",
    [
        (
            {"steps": 30},
            0,
            "`again` keeps that picture's 30 steps, over today's limit of 20 (`limits.max_steps`).",
        ),
        (
            {"width": 1024, "height": 1024},
            0,
            "`again` keeps that picture's size, 1024×1024, over today's limit of 512×512",
        ),
        (
            {"count": 4},
            None,
            "`again` keeps that set's 4 pictures, over today's limit of 2 at "
            "once (`limits.max_images`): reply to one of its pictures instead.",
        ),
    ],
)
async def test_again_over_todays_limits_is_refused_naming_the_limit(made, picture, says):
    refused = await iterator()._again(Again(), posted(picture, **made))
    assert isinstance(refused, UsageError)
    assert says in refused.message


async def test_again_within_todays_limits_makes_the_job():
    again = await iterator()._again(Again(), posted(0, count=4))  # one picture of a set
    assert isinstance(again, Job)
    assert (again.steps, again.width, again.height, again.count) == (8, 512, 512, 1)


async def test_vary_keeps_the_steps_and_refuses_them_over_todays_limit():
    refused = await iterator()._vary(Vary(), SOURCE, posted(0, steps=30))
    assert isinstance(refused, UsageError)
    assert refused.message == (
        "`vary` keeps that picture's 30 steps, over today's limit of 20 (`limits.max_steps`)."
    )
    # The size and count are the variation's own: a set's picture, once larger, is fine.
    varied = await iterator()._vary(Vary(), SOURCE, posted(0, width=1024, height=1024, count=4))
    assert isinstance(varied, Job) and (varied.width, varied.height, varied.count) == (512, 512, 1)
