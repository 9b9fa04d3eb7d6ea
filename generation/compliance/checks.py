"""Every check a picture passes before it is sent, and the marks it gets, in one place.

`Compliance.screen` runs the checks in a fixed order and says what to do with the picture:
send it, send it with a warning, send it blurred, or withhold it. `Compliance.signing`
gives the encoder its very last step, the C2PA signature (the XMP marker is always written
by `generation.postprocess.png`; both make the picture's claim, `generation.compliance.claims`),
and `Compliance.public_parameters` what of the parameters a picture may carry.

Order, and why:
1. the prompt blocklist (cheapest, and needs no picture);
2. the safety classifier on the picture as made (a blurred picture is not checked again);
3. the copy check against the references, the logos and the descriptor model: a verdict
   of block withholds the picture, warn sends it with a notice, log only records it;
4. the invisible watermark, on what will be sent (after any blur, before the metadata).

Nothing here knows about chat: the verdict carries the reasons as text and a record for
the usage log; the bot sends the notices.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from . import safety
from .claims import MADE, Claim
from .signing import SigningError
from .references import Index, Match


@dataclass
class Verdict:
    action: str  # send, warn, blur or block
    image: Image.Image | None  # what to send; None when withheld
    reasons: list[str] = field(default_factory=list)  # for the notice, one per finding
    record: dict[str, Any] = field(default_factory=dict)  # for the usage log

    @property
    def withheld(self) -> bool:
        return self.image is None


def _copy_words(match: Match) -> str:
    distances = ", ".join(
        f"{name} {value}"
        for name, value in (
            ("PDQ distance", match.pdq),
            ("pHash", match.phash),
            ("dHash", match.dhash),
        )
        if value is not None
    )
    return f"it is too close to the reference picture {match.reference!r} ({distances})"


class Compliance:
    def __init__(
        self,
        *,
        signer=None,
        watermark: bool = False,
        embed_prompt: bool = False,
        embed_sources: bool = False,
        embed_worker: bool = False,
        references: Index | None = None,
        on_match: str = "block",
        logos=None,
        embedding=None,
        nsfw: str = "off",
        detector: safety.Detector | None = None,
        blocklist: safety.Blocklist | None = None,
        detector_name: str = "opennsfw",
    ):
        self.signer = signer
        self.watermark = watermark
        self.embed_prompt = embed_prompt
        self.embed_sources = embed_sources
        self.embed_worker = embed_worker
        self.references = references
        self.on_match = on_match
        self.logos = logos
        self.embedding = embedding
        self.nsfw = nsfw
        self.detector = detector
        self.detector_name = detector_name
        self._loading = threading.Lock()
        self.blocklist = blocklist or safety.Blocklist()

    @classmethod
    def from_settings(cls, settings, state_dir: Path, version: str = "") -> Compliance:
        """Everything the `compliance:` section asks for, loaded now (a wrong file fails
        here, at start). `settings` is the section (bot.config.ComplianceSettings)."""
        from .references import load

        signer = None
        if settings.c2pa.cert is not None:
            from .signing import C2paSigner

            signer = C2paSigner.from_files(
                settings.c2pa.cert, settings.c2pa.key, settings.c2pa.tsa_url, version
            )
        references = None
        if settings.references is not None:
            references = load(settings.references, state_dir / "references.json")
        logos = embedding = None
        if settings.logos is not None:
            from .logos import Logos

            logos = Logos.load(settings.logos)
        if settings.embedding.model is not None:
            from .embedding import Descriptor

            embedding = Descriptor.load(
                settings.embedding.model, settings.embedding.sha256, references
            )
        # Loaded now when the config turns the check on (a missing extra fails the start);
        # else on the first picture of a room that turns it on for itself.
        detector = safety.detector(settings.nsfw_detector) if settings.nsfw != "off" else None
        if settings.watermark:
            from .watermark import available

            if (why := available()) is not None:
                raise RuntimeError(why)
        return cls(
            signer=signer,
            watermark=settings.watermark,
            embed_prompt=settings.embed_prompt,
            embed_sources=settings.embed_sources,
            embed_worker=settings.embed_worker,
            references=references,
            on_match=settings.on_match,
            logos=logos,
            embedding=embedding,
            nsfw=settings.nsfw,
            detector=detector,
            detector_name=settings.nsfw_detector,
            blocklist=safety.Blocklist(settings.blocklist.words, settings.blocklist.patterns),
        )

    # ---- checks -------------------------------------------------------------------------

    def screen(self, image: Image.Image, prompt: str = "", room_nsfw: str | None = None) -> Verdict:
        """What to do with one picture (see the module's order). Runs in a thread."""
        record: dict[str, Any] = {}
        timings: dict[str, float] = {}
        started = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal started
            now = time.perf_counter()
            timings[name] = round((now - started) * 1000, 1)
            started = now

        # 1. The prompt blocklist.
        if prompt and (term := self.blocklist.blocked(prompt)) is not None:
            record["blocklist"] = term
            return Verdict(
                "block", None, ["the prompt contains a blocked term"], {**record, "action": "block"}
            )
        # 2. The safety classifier.
        policy = safety.stricter(self.nsfw, room_nsfw)
        try:
            found = safety.check(image, policy, self._detector() if policy != "off" else None)
        except ImportError:
            # A room asked for a check this installation cannot do: never looser than asked.
            return Verdict(
                "block",
                None,
                [
                    f"this room asks for a safety check, and its detector ({self.detector_name}) "
                    "is not installed"
                ],
                {**record, "action": "block", "nsfw": "unavailable"},
            )
        lap("nsfw")
        if found is not None:
            record["nsfw"] = found.record()
            if found.action == "block":
                return Verdict(
                    "block",
                    None,
                    [f"the safety check flagged it ({_scores_words(found.scores)})"],
                    {**record, "action": "block", "ms": timings},
                )
        # 3. The copy checks.
        reasons: list[str] = []
        if self.references is not None:
            match = self.references.match(image)
            record["copy"] = match.record()
            if match.matched:
                reasons.append(_copy_words(match))
            lap("copy")
        if self.logos is not None:
            logo = self.logos.find(image)
            if logo is not None:
                record["logo"] = logo.record()
                reasons.append(f"it shows the logo {logo.name!r} ({logo.inliers} matching points)")
            lap("logos")
        if self.embedding is not None:
            near = self.embedding.nearest(image)
            if near is not None:
                record["embedding"] = near.record()
                if near.verdict == "match":
                    reasons.append(
                        f"it is very like the reference picture {near.name!r} "
                        f"(descriptor similarity {near.cosine:.2f})"
                    )
            lap("embedding")
        action = "send"
        if reasons:
            action = {"block": "block", "warn": "warn", "log": "send"}[self.on_match]
            record["on_match"] = self.on_match
        if action == "block":
            return Verdict("block", None, reasons, {**record, "action": "block", "ms": timings})
        # 4. Blur, then the watermark on what is sent.
        if found is not None and found.action == "blur":
            image, action = safety.blurred(image), "blur" if action == "send" else action
            record["blurred"] = True  # also with a warning: a contact sheet would show it
            reasons.append(
                f"the safety check flagged it ({_scores_words(found.scores)}); it is blurred"
            )
        if self.watermark:
            from .watermark import embed

            image = embed(image)
            lap("watermark")
        # With on_match log the reasons stay, for a caller that shows them (imgbot generate);
        # the bot sends no notice for a picture that is simply sent.
        return Verdict(action, image, reasons, {**record, "action": action, "ms": timings})

    def _detector(self) -> safety.Detector:
        with self._loading:  # pictures are screened in parallel threads
            if self.detector is None:
                self.detector = safety.detector(self.detector_name)
        return self.detector

    # ---- marks --------------------------------------------------------------------------

    def public_parameters(self, params: dict[str, Any]) -> dict[str, Any]:
        """The parameters a picture may carry: the seed, steps, size, model and style, and
        only what the operator publishes of the rest (see PRIVATE)."""
        published = {
            "prompt": self.embed_prompt,
            "sources": self.embed_sources,
            "worker": self.embed_worker,
        }
        hidden = {key for group, keys in PRIVATE.items() if not published[group] for key in keys}
        return {k: v for k, v in params.items() if k not in hidden}

    def signing(self, params: dict[str, Any], claim: Claim = MADE):
        """The encoder's last step, `sign(data, mimetype) -> data`, or None unsigned; the
        manifest makes `claim` (what a txt2img picture claims, unless told otherwise)."""
        if self.signer is None:
            return None
        embedded = self.public_parameters(params) if self.embed_prompt else None
        # A source's address names a picture posted in a room: only where it is published.
        titles = claim.sources if self.embed_sources else ()

        def sign(data: bytes, mimetype: str) -> bytes:
            try:
                return self.signer.sign(data, mimetype, embedded, claim, titles)
            except Exception as exc:  # c2pa's errors: never send the picture unsigned
                raise SigningError(f"C2PA signing failed: {exc}") from exc

        return sign


# What a picture carries only when the operator says so: who asked for it and what they
# typed (compliance.embed_prompt); the addresses of the room pictures it was made from
# (compliance.embed_sources); the GPU worker that made it, an internal host name and Ray
# node ID (compliance.embed_worker). The usage log, the admin's own record, keeps them all.
PRIVATE = {
    "prompt": ("prompt", "negative_prompt"),
    "sources": ("source", "references"),
    "worker": ("worker",),
}


def _scores_words(scores: dict[str, float]) -> str:
    top = sorted(scores.items(), key=lambda kv: -kv[1])[:3]
    return ", ".join(f"{k} {v:.2f}" for k, v in top) or "no score"
