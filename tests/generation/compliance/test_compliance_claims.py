"""A picture claims only what the bot did (issue 28, finding 5): made by AI from a prompt,
edited with AI from someone's picture, or only resized; and it carries the addresses of
room pictures and the worker's name only when the operator says so (finding 9). Each
picture is encoded and signed as the bot does it, with a test CA, and read back as
`imgbot verify` and a C2PA reader see it."""

from __future__ import annotations

import io
import json

import c2pa
import pytest
from PIL import Image

from bot.cli import main
from generation.compliance import Compliance
from generation.compliance.claims import claim_for
from generation.compliance.marking import (
    COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
    TRAINED_ALGORITHMIC_MEDIA,
    source_type_of,
)
from generation.compliance.signing import OFFLINE
from generation.compliance.verify import TRUSTED, verify
from generation.job import Job
from generation.postprocess.png import encode_png, read_parameters

PHOTO = "mxc://localhost/alicesphoto"
HAT = "mxc://localhost/alicesHat"
TRAINED = "trainedAlgorithmicMedia"


def picture() -> Image.Image:
    return Image.effect_mandelbrot((96, 64), (-2, -1.2, 1, 1.2), 60).convert("RGB")


def job(kind: str = "txt2img", **fields) -> Job:
    source = {} if kind == "txt2img" else {"source": PHOTO}
    return Job(
        prompt="a cat in a hat",
        seed=1,
        steps=2,
        width=96,
        height=64,
        kind=kind,
        **{**source, **fields},
    )


def made(
    compliance: Compliance, made_job: Job, ai_upscaler: bool = False, worker: str | None = None
) -> bytes:
    """A picture of `made_job` as the bot encodes and signs it (bot.chat.jobs.posting)."""
    params = made_job.parameters("tiny")
    if worker:
        params["worker"] = worker
    claim = claim_for(made_job, ai_upscaler)
    params = compliance.public_parameters(params)
    return encode_png(picture(), params, compliance.signing(params, claim), claim.source_type)


def manifest(data: bytes) -> dict:
    with c2pa.Reader(None, io.BytesIO(data), context=c2pa.Context.from_dict(OFFLINE)) as reader:
        return reader.get_active_manifest()


def actions(data: bytes) -> list[dict]:
    (assertion,) = [
        a for a in manifest(data)["assertions"] if a["label"].startswith("c2pa.actions")
    ]
    return assertion["data"]["actions"]


def said(data: bytes, ca, capsys, tmp_path) -> tuple[int, str]:
    """What `imgbot verify --trust` says of the picture, and its exit status."""
    path = tmp_path / "picture.png"
    path.write_bytes(data)
    capsys.readouterr()
    status = main(["verify", str(path), "--trust", str(ca["root"]), "--no-watermark"])
    return status, capsys.readouterr().out


def test_a_picture_made_from_a_prompt_is_created_by_ai(signer, ca, capsys, tmp_path):
    data = made(Compliance(signer=signer), job())
    assert source_type_of(data) == TRAINED_ALGORITHMIC_MEDIA
    (created,) = actions(data)
    assert created["action"] == "c2pa.created"
    assert created["digitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    assert not manifest(data).get("ingredients")
    status, out = said(data, ca, capsys, tmp_path)
    assert status == 0 and "  claims: made by AI from a prompt (signed C2PA manifest)" in out


def test_a_plain_resize_of_someones_picture_claims_no_ai(signer, ca, capsys, tmp_path):
    data = made(Compliance(signer=signer), job("upscale", factor=2), ai_upscaler=False)
    assert source_type_of(data) is None  # no XMP digital source type at all
    assert TRAINED.encode() not in data  # nowhere in the file, manifest included
    opened, resized = actions(data)
    assert (opened["action"], resized["action"]) == ("c2pa.opened", "c2pa.resized")
    assert "digitalSourceType" not in resized
    (parent,) = manifest(data)["ingredients"]
    assert parent["relationship"] == "parentOf"
    assert verify(data, ca["root"].read_text(), watermark=False).c2pa == TRUSTED
    status, out = said(data, ca, capsys, tmp_path)
    assert "  claims: resized, no AI claim (signed C2PA manifest)" in out
    assert "  XMP marker: none" in out
    assert status == 0  # marked as what it is: a signed resize


@pytest.mark.parametrize(
    "kind, fields, ai_upscaler",
    [
        ("img2img", {"strength": 0.05}, False),  # nearly the photo as it was
        ("upscale", {"factor": 2}, True),  # an AI upscaler paints in detail
        ("edit", {}, False),
    ],
)
def test_ai_work_on_someones_picture_is_an_edit_with_the_picture_as_its_ingredient(
    signer, ca, capsys, tmp_path, kind, fields, ai_upscaler
):
    data = made(Compliance(signer=signer), job(kind, **fields), ai_upscaler)
    assert source_type_of(data) == COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA
    opened, edited = actions(data)
    assert (opened["action"], edited["action"]) == ("c2pa.opened", "c2pa.edited")
    assert edited["digitalSourceType"] == COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA
    assert f"/{TRAINED}".encode() not in data  # never "entirely made by AI"
    (parent,) = manifest(data)["ingredients"]
    assert parent["relationship"] == "parentOf"
    status, out = said(data, ca, capsys, tmp_path)
    assert status == 0 and "C2PA: Trusted" in out
    assert "  claims: edited with AI from another picture (signed C2PA manifest)" in out
    assert "AI-edited (IPTC compositeWithTrainedAlgorithmicMedia)" in out


@pytest.mark.parametrize(
    "kind, fields", [("img2img", {"strength": 0.4}), ("upscale", {"factor": 2})]
)
def test_vary_and_upscale_of_the_bots_own_picture_are_still_made_by_ai(signer, kind, fields):
    data = made(Compliance(signer=signer), job(kind, source_own=True, **fields))
    assert source_type_of(data) == TRAINED_ALGORITHMIC_MEDIA
    (created,) = actions(data)
    assert created["action"] == "c2pa.created"


def test_an_edit_that_takes_parts_of_other_pictures_names_them_all(signer, ca):
    # Even from the bot's own picture: the hat may come from someone's photo.
    edit = job("edit", source_own=True, references=(HAT,))
    assert not edit.ai_only
    data = made(Compliance(signer=signer, embed_sources=True), edit)
    ingredients = manifest(data)["ingredients"]
    assert [(i["title"], i["relationship"]) for i in ingredients] == [
        (PHOTO, "parentOf"),
        (HAT, "componentOf"),
    ]
    assert [a["action"] for a in actions(data)] == ["c2pa.opened", "c2pa.edited", "c2pa.placed"]
    report = verify(data, ca["root"].read_text(), watermark=False)
    assert (report.c2pa, report.problems) == (TRUSTED, [])


def test_an_unsigned_picture_says_its_claim_by_its_marker(tmp_path, capsys):
    path = tmp_path / "edited.png"
    path.write_bytes(made(Compliance(), job("img2img", strength=0.5)))
    capsys.readouterr()
    assert main(["verify", str(path), "--no-watermark"]) == 0
    out = capsys.readouterr().out
    assert "  claims: edited with AI from another picture (XMP marker, unsigned)" in out


def test_by_default_a_picture_carries_no_room_address_and_no_worker(signer):
    edit = job("edit", references=(HAT,))
    data = made(Compliance(signer=signer, embed_prompt=True), edit, worker="gpu-7 (node 4f2a)")
    params = read_parameters(data)
    assert {"source", "references", "worker"}.isdisjoint(params)
    assert params["kind"] == "edit" and params["prompt"] == "a cat in a hat"
    for private in (b"alicesphoto", b"alicesHat", b"gpu-7", b"4f2a"):
        assert private not in data  # not in the text chunks, not in the manifest
    text = json.dumps(manifest(data))
    assert "org.imgbot.generation" in text and "alicesphoto" not in text


def test_the_operator_may_publish_sources_and_worker(signer):
    compliance = Compliance(signer=signer, embed_prompt=True, embed_sources=True, embed_worker=True)
    data = made(compliance, job("edit", references=(HAT,)), worker="gpu-7 (node 4f2a)")
    params = read_parameters(data)
    assert (params["source"], params["references"], params["worker"]) == (
        PHOTO,
        [HAT],
        "gpu-7 (node 4f2a)",
    )
    generation = actions(data)[1]["parameters"]["org.imgbot.generation"]
    assert (generation["source"], generation["worker"]) == (PHOTO, "gpu-7 (node 4f2a)")
    assert manifest(data)["ingredients"][0]["title"] == PHOTO
