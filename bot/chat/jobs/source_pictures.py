"""The pictures a job starts from: fitted to its size, and fetched again after a restart.
An edit starts from the picture replied to and, where the editing family takes more than
one, the picture a thread was started on as a reference ("put the hat from the second
picture on her").

Why the thread: a Matrix message replies to one event, and a command cannot carry pictures
of its own. A thread on a picture, with the other picture posted in it and replied to with
`!img edit …`, gives two, in an order a person can refer to: the replied-to picture first
(the one that is changed, at its own size), the thread's first picture second."""

from __future__ import annotations

import asyncio
import dataclasses

from PIL import Image, ImageOps

from generation.job import Job

from bot.matrix import sources
from bot.matrix.messages import relation_of
from bot.matrix.sources import Source, SourceError


def fitted(image: Image.Image, width: int, height: int) -> Image.Image:
    """The picture cropped to the aspect of width×height (from its middle) and scaled to
    it: image-to-image starts from exactly the size it makes, undistorted."""
    if image.size == (width, height):
        return image
    return ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS)


def thread_root(content: dict) -> str | None:
    """The first message of the thread this message is in, or None outside threads."""
    relation = relation_of(content)
    root = relation.get("event_id")
    return root if relation.get("rel_type") == "m.thread" and isinstance(root, str) else None


class ReferenceUnusable(SourceError):
    """An edit's reference picture (not the picture it changes) cannot be used."""


async def thread_references(
    client,
    room_id: str,
    content: dict,
    reply: str,
    pictures: int,
    limits,
    made_from: tuple[str, ...] = (),
) -> list[Source]:
    """The references of an edit replying to `reply`: the thread's first picture where the
    family takes two or more pictures and that is another picture; else none. `made_from`:
    the locators the replied-to picture was made from, when the bot made it (an edit of the
    bot's own edit in the thread already has the first picture in it, and must not get it
    twice). A thread started on text has none; a picture that cannot be used says why
    (SourceError)."""
    root = thread_root(content)
    if pictures < 2 or root is None or root == reply:
        return []
    try:
        event = await sources.picture_event(client, room_id, root)
    except sources.NotAPicture:
        return []
    except SourceError as exc:
        raise SourceError(_about_the_root(str(exc))) from None
    content = event["content"]
    url = sources.locator(content)
    if url.partition("#")[0] in {made.partition("#")[0] for made in made_from}:
        return []
    try:
        return [await sources.fetch(client, url, (content.get("info") or {}).get("size"), limits)]
    except SourceError as exc:
        raise SourceError(f"The thread's first picture: {exc}") from None


def _about_the_root(said: str) -> str:
    """picture_event's words about "the message you replied to", said of the thread's first
    picture, which nobody replied to."""
    replied = "The message you replied to"
    if said.startswith(replied):
        return "The thread's first picture" + said[len(replied) :]
    return f"The thread's first picture: {said}"


async def refetched(client, job: Job, limits) -> Job:
    """`job` with the pictures it starts from fetched again from their locators (they are
    not kept in the job store): the source, fitted to the job's size for img2img
    and edit (an upscale takes it as it is), and an edit's references. Raises SourceError
    (ReferenceUnusable for a reference; sources.Unavailable when the homeserver cannot be
    asked now)."""
    source = await sources.fetch(client, job.source, None, limits)
    image = source.image
    if job.kind in ("img2img", "edit"):
        image = await asyncio.to_thread(fitted, image, job.width, job.height)
    references = []
    for url in job.references:
        try:
            references.append(await sources.fetch(client, url, None, limits))
        except sources.Unavailable:
            raise  # asked again later, like the source
        except SourceError as exc:
            raise ReferenceUnusable(str(exc)) from None
    return dataclasses.replace(
        job, image=image, reference_images=tuple(ref.image for ref in references)
    )
