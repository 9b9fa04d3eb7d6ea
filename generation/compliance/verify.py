"""`imgbot verify`: what a picture says about where it came from, checked offline.

For each file: the XMP digital source type (the AI-generated marker), the state of its C2PA
manifest, what the picture claims in words (`generation.compliance.claims`: made by AI
from a prompt, edited with AI from another picture, resized with no AI claim; the signed
manifest's claim where there is a valid one, else the marker's), and the watermark bits.
The C2PA states are the SDK's own, named for people:

- Trusted: the signature is valid and its certificate chains to a root given with
  `--trust ROOT.pem` (the company CA's certificate).
- Valid but untrusted: the signature and the picture's hash are right, but the signer's
  chain was not checked against a root we trust (no `--trust`, or another root).
- Invalid: the manifest is there but the picture or the manifest was changed after
  signing, or the signature is bad.
- none: no C2PA manifest at all.
- not checked: c2pa-python (imgbot[compliance]) is not installed; the marker and the
  watermark are still read.

Nothing is fetched: remote manifests and OCSP are off, as when signing.
"""

from __future__ import annotations

import importlib
import io
from dataclasses import dataclass, field

from PIL import Image

from .claims import OPENED, words_for
from .marking import (
    COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
    TRAINED_ALGORITHMIC_MEDIA,
    source_type_of,
)
from .signing import OFFLINE

TRUSTED, UNTRUSTED, INVALID, NONE = "Trusted", "Valid but untrusted", "Invalid", "none"
# Without the compliance extra the manifest cannot be read; the rest still can be.
NOT_CHECKED = (
    "not checked: reading C2PA needs imgbot[compliance] (pip install 'imgbot[compliance]')"
)


def c2pa_missing() -> str | None:
    """None when c2pa-python can be imported, else why not."""
    try:
        importlib.import_module("c2pa")
    except ImportError as exc:
        return str(exc)
    return None


@dataclass
class Report:
    marker: str | None  # the XMP digital source type, if any
    c2pa: str  # TRUSTED, UNTRUSTED, INVALID, NONE or NOT_CHECKED
    problems: list[str] = field(default_factory=list)  # C2PA failure codes, explained
    signer: str | None = None  # the signing certificate's common name and issuer
    watermark: bytes | None = None  # the 48 bits read, None: not read
    watermark_note: str | None = None  # why not read
    picture: bool = True  # False: not a picture Pillow can open at all
    timestamp: str | None = None  # "TIME by AUTHORITY" when the signature is stamped
    # The manifest's claim: (its action, its digital source type or None); None: no manifest
    claimed: tuple[str, str | None] | None = None

    @property
    def ai_marked(self) -> bool:
        """The XMP marker says a trained model made or changed the picture."""
        return self.marker in (TRAINED_ALGORITHMIC_MEDIA, COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA)

    @property
    def signed_claim(self) -> tuple[str, str | None] | None:
        """The claim of a manifest whose signature holds; None when there is none."""
        return self.claimed if self.c2pa in (TRUSTED, UNTRUSTED) else None

    @property
    def marked(self) -> bool:
        """Marked as what it is: as AI-made or AI-edited, or signed as a plain resize of
        someone's picture, which claims no AI (and carries no AI marker)."""
        signed = self.signed_claim
        return self.ai_marked or (signed is not None and signed[1] is None and self.marker is None)

    @property
    def claim(self) -> str:
        """What the picture claims, in words, and where it says so."""
        if self.signed_claim is not None:
            return f"{words_for(*self.signed_claim)} (signed C2PA manifest)"
        how = {NONE: "unsigned", NOT_CHECKED: "C2PA not checked"}.get(
            self.c2pa, "not signed validly"
        )
        return f"{words_for(None, self.marker)} (XMP marker, {how})"

    def lines(self) -> list[str]:
        from .watermark import MAX_WRONG, wrong_bits

        marker = {
            TRAINED_ALGORITHMIC_MEDIA: "AI-generated (IPTC trainedAlgorithmicMedia)",
            COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA: "AI-edited (IPTC compositeWithTrainedAlgorithmicMedia)",
        }.get(self.marker or "", self.marker or "none")
        c2pa = self.c2pa + (f", signed by {self.signer}" if self.signer else "")
        if self.watermark is not None:
            # Any picture reads as some 48 bits; only those near imgbot's are a watermark.
            wrong = wrong_bits(self.watermark)
            mark = (
                "none"
                if wrong > MAX_WRONG
                else f"{self.watermark.hex()} (imgbot"
                + (f", {wrong} of 48 bits changed, as by JPEG" if wrong else "")
                + ")"
            )
        else:
            mark = f"not read ({self.watermark_note})"
        stamp = [f"    time-stamped at {self.timestamp}"] if self.timestamp else []
        return [
            f"  claims: {self.claim}",
            f"  XMP marker: {marker}",
            f"  C2PA: {c2pa}",
            *(f"    {p}" for p in self.problems),
            *stamp,
            f"  watermark: {mark}",
        ]


def c2pa_state(
    data: bytes, trust_pem: str | None = None
) -> tuple[str, list[str], str | None, str | None]:
    """(state, failure explanations, signer, time-stamp) of the picture's C2PA manifest."""
    state, failures, signer, stamp, _ = _read(data, trust_pem)
    return state, failures, signer, stamp


def _read(data: bytes, trust_pem: str | None):
    """c2pa_state's four, and the manifest's claim (see `Report.claimed`)."""
    import c2pa

    settings = {**OFFLINE}
    if trust_pem:
        # Replaces the SDK's built-in anchors: trusted means "chains to this root".
        settings["trust"] = {"trust_anchors": trust_pem}
    context = c2pa.Context.from_dict(settings)
    try:
        reader = c2pa.Reader(None, io.BytesIO(data), context=context)
    except c2pa.C2paError as exc:
        if "ManifestNotFound" in type(exc).__name__ or "ManifestNotFound" in str(exc):
            return NONE, [], None, None, None
        return INVALID, [str(exc).splitlines()[0]], None, None, None
    with reader:
        state = reader.get_validation_state() or INVALID
        results = reader.get_validation_results() or {}
        manifest = reader.get_active_manifest() or {}
    active = results.get("activeManifest") or {}
    failures = [f"{f.get('code')}: {f.get('explanation')}" for f in active.get("failure", [])]
    info = manifest.get("signature_info") or {}
    signer = " / ".join(x for x in (info.get("common_name"), info.get("issuer")) if x) or None
    state = {"Trusted": TRUSTED, "Valid": UNTRUSTED}.get(state, INVALID)
    if state == UNTRUSTED and trust_pem is None:
        failures = [f for f in failures if not f.startswith("signingCredential.untrusted")]
    return state, failures, signer, _stamp(info, active), _claimed(manifest)


def _claimed(manifest: dict) -> tuple[str, str | None] | None:
    """The manifest's claim: its first action that is not the opening of an ingredient
    (an edit opens its parent first), with that action's digital source type."""
    for assertion in manifest.get("assertions") or []:
        if str(assertion.get("label", "")).startswith("c2pa.actions"):
            for action in (assertion.get("data") or {}).get("actions") or []:
                if action.get("action") != OPENED:
                    return str(action.get("action")), action.get("digitalSourceType")
    return None


def _stamp(info: dict, active: dict) -> str | None:
    """When, and by which authority, the signature was time-stamped; None: not stamped.
    c2pa gives the time (the authority's genTime) and names the authority only in the
    explanation of its `timeStamp.*` codes: "...: NAME[, trust list: ...]"."""
    if not info.get("time"):
        return None
    said = {
        r.get("code"): r.get("explanation") or ""
        for kind in ("success", "informational", "failure")
        for r in active.get(kind, [])
    }
    code = next(
        (
            c
            for c in ("timeStamp.trusted", "timeStamp.untrusted", "timeStamp.validated")
            if c in said
        ),
        None,
    )
    by = said[code].split(": ", 1)[-1].split(", trust list")[0] if code else "an authority"
    return f"{info['time']} by {by}" + (
        "" if code == "timeStamp.trusted" else " (authority not trusted)"
    )


def _opens(data: bytes) -> bool:
    try:
        # Opening reads the header only: a picture changed after signing must still be
        # read, and reported Invalid.
        with Image.open(io.BytesIO(data)):
            return True
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return False


def verify(data: bytes, trust_pem: str | None = None, watermark: bool = True) -> Report:
    """Everything `imgbot verify` says about one file's bytes."""
    if not _opens(data):
        return Report(None, NONE, picture=False)
    if c2pa_missing():
        state, problems, signer, stamp, claimed = NOT_CHECKED, [], None, None, None
    else:
        state, problems, signer, stamp, claimed = _read(data, trust_pem)
    report = Report(source_type_of(data), state, problems, signer, timestamp=stamp, claimed=claimed)
    if not watermark:
        report.watermark_note = "not asked for"
        return report
    from .watermark import WatermarkUnavailable, read

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            report.watermark = read(image)
        if report.watermark is None:
            report.watermark_note = "the picture is too small to carry one"
    except WatermarkUnavailable:
        report.watermark_note = "invisible-watermark is not installed"
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        report.watermark_note = f"not a picture Pillow can open ({exc})"
    return report
