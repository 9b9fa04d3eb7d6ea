"""The copy check: the reference index, what it catches (resized, re-encoded, blurred,
brightened, squashed, flipped copies) and that unrelated pictures do not match."""

from __future__ import annotations

import io
import json
import random

import pytest
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

from bot.cli import main
from generation.compliance import Compliance
from generation.compliance.references import MIN_QUALITY, Index, build, load


def scene(seed: int, size: int = 512) -> Image.Image:
    """A picture of its own for each seed: a gradient and a few dozen shapes."""
    rng = random.Random(seed)
    image = Image.linear_gradient("L").resize((size, size)).rotate(rng.uniform(0, 360))
    image = ImageOps.colorize(
        image,
        tuple(rng.randrange(256) for _ in range(3)),
        tuple(rng.randrange(256) for _ in range(3)),
    )
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(20, 40)):
        x, y = rng.randrange(size), rng.randrange(size)
        r = rng.randint(size // 40, size // 6)
        colour = tuple(rng.randrange(256) for _ in range(3))
        if rng.random() < 0.5:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        else:
            draw.polygon(
                [(x + rng.randint(-r, r), y + rng.randint(-r, r)) for _ in range(4)], fill=colour
            )
    return image


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


VARIANTS = {
    "same": lambda im: im,
    "half size": lambda im: im.resize((im.width // 2, im.height // 2)),
    "double size": lambda im: im.resize((im.width * 2, im.height * 2)),
    "jpeg 60": lambda im: _jpeg(im, 60),
    "jpeg 30": lambda im: _jpeg(im, 30),
    "blur 2": lambda im: im.filter(ImageFilter.GaussianBlur(2)),
    "brighter": lambda im: ImageEnhance.Brightness(im).enhance(1.25),
    "darker": lambda im: ImageEnhance.Brightness(im).enhance(0.8),
    "squashed 4:3": lambda im: im.resize((im.width, im.height * 3 // 4)),
    "mirrored": lambda im: ImageOps.mirror(im),
    "rotated 90": lambda im: im.rotate(90),
}


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    folder = tmp_path_factory.mktemp("references")
    for seed in range(12):
        scene(seed).save(folder / f"ref-{seed:02d}.png")
    (folder / "art").mkdir()
    scene(99).convert("RGB").save(folder / "art" / "painting.jpg", quality=90)
    Image.new("RGB", (300, 300), (200, 30, 30)).save(folder / "flat-red.png")
    (folder / "notes.png").write_bytes(b"not a picture")
    return folder


@pytest.fixture(scope="module")
def index(collection):
    return build(collection)


def test_index_holds_every_picture_and_says_which_are_flat(index):
    names = {r.name for r in index.references}
    assert {"ref-00.png", "art/painting.jpg", "flat-red.png"} <= names
    assert [r.name for r in index.flat] == ["flat-red.png"]
    assert index.unreadable == ["notes.png"]
    reference = next(r for r in index.references if r.name == "ref-00.png")
    assert len(reference.pdq) == 64 and len(reference.phash) == 16 and len(reference.sha256) == 64
    assert reference.quality >= MIN_QUALITY


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_copies_of_a_reference_are_caught(index, variant):
    for seed in (0, 5, 99):
        copy = VARIANTS[variant](scene(seed).convert("RGB"))
        found = index.match(copy)
        expected = "art/painting.jpg" if seed == 99 else f"ref-{seed:02d}.png"
        assert found.matched and found.reference == expected, (variant, seed, found)


def test_unrelated_pictures_never_match(index):
    for seed in range(100, 140):
        found = index.match(scene(seed))
        assert not found.matched, (seed, found)
        assert found.reference is not None and found.pdq > 31


def test_a_flat_picture_matches_nothing(index):
    # Too flat for the hashes to say anything: matching it would block every flat picture.
    flat = Image.new("RGB", (300, 300), (200, 30, 30))
    found = index.match(flat)
    assert not found.matched and found.quality < MIN_QUALITY
    assert "flat-red.png" in {r.name for r in index.flat}
    assert not index.match(Image.new("RGB", (300, 300), (190, 40, 30))).matched


def test_a_reference_unreadable_at_first_is_indexed_once_it_can_be_read(tmp_path):
    folder = tmp_path / "references"
    folder.mkdir()
    scene(1).save(folder / "ref-1.png")
    (folder / "ref-2.png").write_bytes(b"half a copy")  # still being copied
    path = tmp_path / "references.json"
    assert load(folder, path).unreadable == ["ref-2.png"]
    assert not load(folder, path).match(scene(2)).matched
    scene(2).save(folder / "ref-2.png")  # the copy finished
    found = load(folder, path).match(scene(2).resize((256, 256)))
    assert found.matched and found.reference == "ref-2.png"


def _config(tmp_path, references) -> str:
    """A config whose copy check uses the folder `references`."""
    config = tmp_path / "config.yaml"
    config.write_text(
        f"matrix:\n  homeserver_url: http://127.0.0.1:1\n"
        f"  user_id: '@imgbot:localhost'\n  password: x\n"
        f"state_dir: {tmp_path / 'state'}\n"
        f"compliance:\n  references: {references}\n"
    )
    return str(config)


def test_a_folder_with_nothing_to_match_is_reported(tmp_path, capsys, caplog):
    folder = tmp_path / "references"
    folder.mkdir()
    Image.new("RGB", (64, 64), "white").save(folder / "blank.png")
    assert not load(folder, tmp_path / "references.json").usable
    assert "lets every picture through" in caplog.text
    assert main(["references", "index", "-c", _config(tmp_path, folder)]) == 1
    assert "no picture of" in capsys.readouterr().err


def test_a_large_crop_escapes(index):
    # What perceptual hashes of the whole picture cannot see (the README says so).
    image = scene(3)
    crop = image.crop((0, 0, int(image.width * 0.7), int(image.height * 0.7)))
    assert not index.match(crop).matched


def test_index_is_saved_and_rebuilt_when_the_folder_changes(collection, tmp_path):
    path = tmp_path / "references.json"
    first = load(collection, path)
    assert path.is_file()
    assert Index.read(path).references == first.references
    stamp = path.stat().st_mtime_ns
    load(collection, path)
    assert path.stat().st_mtime_ns == stamp  # unchanged folder: the saved index is used
    scene(50).save(collection / "ref-50.png")
    try:
        again = load(collection, path)
        assert "ref-50.png" in {r.name for r in again.references}
    finally:
        (collection / "ref-50.png").unlink()


@pytest.mark.parametrize(
    "on_match, action", [("block", "block"), ("warn", "warn"), ("log", "send")]
)
def test_on_match_decides_what_happens(index, on_match, action):
    compliance = Compliance(references=index, on_match=on_match)
    verdict = compliance.screen(scene(4).resize((256, 256)))
    assert verdict.action == action
    assert verdict.withheld == (action == "block")
    assert verdict.record["copy"]["reference"] == "ref-04.png"
    if action != "send":
        assert "'ref-04.png'" in verdict.reasons[0] and "PDQ distance" in verdict.reasons[0]
    clear = compliance.screen(scene(200))
    assert clear.action == "send" and clear.image is not None and not clear.reasons


def test_imgbot_references_index(collection, tmp_path, capsys):
    assert main(["references", "index", "-c", _config(tmp_path, collection)]) == 0
    out = capsys.readouterr().out
    assert "indexed 14 reference pictures" in out and "(13 can be matched)" in out
    assert "too flat to match (PDQ quality" in out and "flat-red.png" in out
    assert "left out: notes.png" in out
    saved = json.loads((tmp_path / "state" / "references.json").read_text())
    assert len(saved["references"]) == 14


def test_checks_that_cannot_load_withhold_every_picture(tmp_path):
    from bot.config import Settings
    from bot.chat.jobs.screening import Screening

    folder = tmp_path / "references"
    folder.mkdir()
    settings = Settings(
        matrix={
            "homeserver_url": "http://127.0.0.1:1",
            "user_id": "@imgbot:localhost",
            "password": "x",
        },
        state_dir=tmp_path / "state",
        compliance={"references": folder},
    )
    assert Screening.load(settings).broken is None
    folder.rmdir()  # gone after the start: fail closed, never an empty index
    broken = Screening.load(settings).broken
    assert broken is not None and "is not there" in broken
