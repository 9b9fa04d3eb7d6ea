"""What a picture claims about where it came from, in its XMP marker and its C2PA manifest.

A company's key must not certify someone's photo as made by its model: `!img upscale` works
on any picture (a plain Lanczos resize when no AI upscaler is configured), and img2img at a
low strength nearly keeps the picture it started from. So a picture claims only what the
bot did:

- made by AI from a prompt: `c2pa.created`, IPTC `trainedAlgorithmicMedia`. Also what the
  bot makes from a picture it made itself from a prompt (again, vary, upscale, an edit of
  it): every pixel is still the model's. The chat side says when the source was the bot's
  own (`Job.source_own`); nobody else can post as the bot.
- edited with AI from another picture (img2img, an edit, an AI upscale of a picture the bot
  did not make): `c2pa.edited` with `compositeWithTrainedAlgorithmicMedia`, the source as a
  `parentOf` ingredient (and an edit's reference pictures as `componentOf` ones).
- resized, no AI claim (a plain resize of a picture the bot did not make): `c2pa.resized`
  with the source as its parent, and no digital source type anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from .marking import COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA, TRAINED_ALGORITHMIC_MEDIA

CREATED, EDITED, RESIZED, OPENED = "c2pa.created", "c2pa.edited", "c2pa.resized", "c2pa.opened"


@dataclass(frozen=True)
class Claim:
    """One picture's claim. `sources` are the locators of the pictures it was made from
    (the first is its parent); they name its ingredients only where the operator allows
    (`compliance.embed_sources`)."""

    action: str  # CREATED, EDITED or RESIZED: what the bot did
    source_type: str | None  # the IPTC digital source type; None: no AI claim
    words: str  # the claim in words, as `imgbot verify` says it
    sources: tuple[str, ...] = ()

    @property
    def derived(self) -> bool:
        """Made from a picture the bot did not make (the manifest then has ingredients)."""
        return self.action != CREATED


EDITED_WORDS = "edited with AI from another picture"
MADE = Claim(CREATED, TRAINED_ALGORITHMIC_MEDIA, "made by AI from a prompt")
WORDS = {
    (CREATED, TRAINED_ALGORITHMIC_MEDIA): MADE.words,
    (EDITED, COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA): EDITED_WORDS,
    (RESIZED, None): "resized, no AI claim",
}


def claim_for(job, ai_upscaler: bool) -> Claim:
    """What a picture of `job` (a generation.job.Job) may claim; `ai_upscaler`: whether an
    upscale runs a model (False: a Lanczos resize)."""
    if job.ai_only:
        return MADE
    sources = tuple(url for url in (job.source_url, *job.reference_urls) if url)
    if job.kind == "upscale" and not ai_upscaler:
        return Claim(RESIZED, None, WORDS[RESIZED, None], sources)
    source_type = COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA
    return Claim(EDITED, source_type, WORDS[EDITED, source_type], sources)


def words_for(action: str | None, source_type: str | None) -> str:
    """A manifest's (or, with no action, an XMP marker's) claim in words."""
    if action is None:
        return {
            TRAINED_ALGORITHMIC_MEDIA: "made by AI",
            COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA: EDITED_WORDS,
        }.get(source_type or "", "no AI claim")
    if (action, source_type) in WORDS:
        return WORDS[action, source_type]
    what = action.removeprefix("c2pa.")
    return f"{what}, " + (f"digital source type {source_type}" if source_type else "no AI claim")
