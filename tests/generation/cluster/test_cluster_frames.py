"""The frames between the bot and its bridge, and the messages in them: JSON and raw PNG
parts of a fixed form, never pickle; what does not fit is refused before it is used."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
from pathlib import Path

import pytest
from PIL import Image

from generation.cluster import frames, messages
from generation.cluster.spec import ClusterSpec
from generation.job import Job
from generation.models.recipe import Recipe
from generation.scheduling.progress import Progress


class _Payload:
    """What a hostile worker (or bridge) would send: unpickling it runs a command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _png(size=(64, 48), colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_pickle_with_a_reduce_payload_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"
    data = pickle.dumps(("done", 1, _Payload(marker)))
    stream = io.BytesIO(struct.pack("!I", len(data)) + data)  # as the old frames were
    with pytest.raises(frames.FrameError):
        frames.receive(stream)
    assert not marker.exists()


def test_a_pickle_inside_a_well_formed_frame_stays_bytes(tmp_path):
    marker = tmp_path / "ran"
    data = pickle.dumps(_Payload(marker))
    header = {"kind": "done", "request": 1, "worker": "w", "seconds": 1.0, "counts": [1]}
    (got, parts) = frames.receive(io.BytesIO(frames.encode(header, [data])))
    assert (got, parts) == (header, [data]) and not marker.exists()
    with pytest.raises(messages.Invalid, match="not a PNG"):
        messages.picture(parts[0])
    assert not marker.exists()


def test_a_frame_and_its_parts_round_trip():
    header = {"kind": "run", "request": 7, "slot": 0, "jobs": []}
    stream = io.BytesIO(
        frames.encode(header, [b"one", b"", b"three"])
        + frames.encode({"kind": "log", "level": 20, "words": "ü"})
    )
    assert frames.receive(stream) == (header, [b"one", b"", b"three"])
    assert frames.receive(stream) == ({"kind": "log", "level": 20, "words": "ü"}, [])
    assert frames.receive(stream) is None  # the other end closed


@pytest.mark.parametrize(
    "start, words",
    [
        ((frames.MAX_HEADER + 1, 0, 0), "header"),
        ((10, frames.MAX_PARTS + 1, 0), "parts"),
        ((10, 1, frames.MAX_TOTAL + 1), "bytes of parts"),
    ],
)
def test_a_frame_over_the_limits_is_refused_before_it_is_read(start, words):
    with pytest.raises(frames.FrameError, match=words):
        frames.receive(io.BytesIO(struct.pack("!III", *start)))


def test_a_part_longer_than_the_frame_said_is_refused():
    text = json.dumps({"kind": "log"}).encode()
    data = struct.pack("!III", len(text), 1, 4) + text + struct.pack("!I", 5) + b"12345"
    with pytest.raises(frames.FrameError, match="over the limit"):
        frames.receive(io.BytesIO(data))


@pytest.mark.parametrize("header", [b"not json", b"[1, 2]", b'{"no": "kind"}', b"\xff\xfe"])
def test_a_header_that_is_not_a_dict_with_a_kind_is_refused(header):
    with pytest.raises(frames.FrameError):
        frames.receive(io.BytesIO(struct.pack("!III", len(header), 0, 0) + header))


# ---- the messages -----------------------------------------------------------------------------


def _done(**fields):
    return {
        "kind": "done",
        "request": 3,
        "worker": "gpu1 #0",
        "seconds": 1.5,
        "counts": [1],
        **fields,
    }


@pytest.mark.parametrize(
    "header, parts, words",
    [
        ({"kind": "exec", "code": "x"}, [], "unknown kind"),
        (_done(worker=5), [b"x"], "worker"),
        (_done(seconds="soon"), [b"x"], "seconds"),
        (_done(counts=[2]), [b"x"], "counts 2 picture"),
        (_done(counts=[1, 1]), [b"x"], "counts 2 picture"),
        (_done(counts=[-1, 2]), [b"x"], "counts 1 picture"),
        (_done(extra=1), [b"x"], "unknown fields"),
        (_done(worker="w" * (messages.MAX_TEXT + 1)), [b"x"], "at most"),
        ({"kind": "slot", "slot": "0", "state": "up", "generation": 1}, [], "slot"),
        ({"kind": "slot", "slot": 0, "state": "on fire", "generation": 1}, [], "state"),
        ({"kind": "slot", "slot": 0, "state": "up", "generation": 1}, [], "facts only"),
        ({"kind": "log", "level": True, "words": "x"}, [], "level"),
        (
            {"kind": "survey", "workers": [{"worker": "w", "device": "d"}], "room": 1},
            [],
            "neither its models nor an error",
        ),
        ({"kind": "lost", "request": 1, "words": "gone"}, [b"x"], "carries parts"),
        ({"kind": "progress", "request": 1, "progress": {"done": 1}}, [], "progress"),
    ],
)
def test_a_frame_from_the_bridge_that_does_not_fit_is_invalid(header, parts, words):
    with pytest.raises(messages.Invalid, match=words):
        messages.from_bridge(header, parts)


def test_frames_from_the_bridge_that_fit():
    assert messages.from_bridge(_done(), [b"png"])
    assert messages.from_bridge({"kind": "done", "request": 3, "error": "no"}, [])
    info = {
        "worker": "gpu1 #0",
        "host": "gpu1",
        "node": "abc",
        "slot": 0,
        "auth": "token",
        "versions": {"imgbot": "1"},
        "device": "cuda:0",
        "models": ["tiny"],
    }
    assert messages.from_bridge(
        {"kind": "slot", "slot": 0, "state": "up", "generation": 2, "info": info}, []
    )


class _Sneaky(dict):
    """A dict that is not one: a subclass could do anything when read."""


@pytest.mark.parametrize(
    "answer",
    [
        None,
        "a string",
        ["worker", "x"],
        _Sneaky(worker="w", error="e"),
        {"worker": "w", "error": "e", "shell": "rm -rf /"},
        {"worker": b"w", "error": "e"},
        {"worker": "w", "host": "h", "versions": {}, "device": "d"},  # neither models nor error
    ],
)
def test_a_ready_answer_that_is_not_valid(answer):
    with pytest.raises(messages.Invalid):
        messages.ready_answer(answer)


@pytest.mark.parametrize(
    "answer",
    [
        {"images": [[b"png"]], "worker": "w", "seconds": float("nan")},
        {"images": [["not bytes"]], "worker": "w", "seconds": 1.0},
        {"images": [b"png"], "worker": "w", "seconds": 1.0},
        {"error": 42},
        [],
    ],
)
def test_a_run_answer_that_is_not_valid(answer):
    with pytest.raises(messages.Invalid):
        messages.run_answer(answer)


def test_progress_travels_as_a_plain_dict():
    value = Progress(3, 8, "tile", 1, 2)
    wire = messages.progress_to_wire(value)
    assert type(wire) is dict and messages.progress_answer(wire) == wire
    back = messages.progress_from_wire(wire)
    assert (back.done, back.total, back.unit, back.part, back.parts) == (3, 8, "tile", 1, 2)
    assert messages.progress_answer(None) is None
    with pytest.raises(messages.Invalid):
        messages.progress_answer(value)  # the object itself is not a valid answer


def test_a_job_with_its_pictures_round_trips_as_json_and_png():
    source = Image.new("RGB", (32, 16), (1, 2, 3))
    job = Job(
        prompt="a cat",
        seed=5,
        steps=4,
        width=64,
        height=32,
        kind="upscale",
        factor=2,
        source="mxc://example.org/abc",
        references=("mxc://example.org/def",),
        image=source,
        reference_images=(Image.new("L", (8, 8), 9),),
    )
    parts: list[bytes] = []
    wire = messages.job_to_wire(job, parts)
    json.dumps(wire)  # plain data
    messages.from_bot({"kind": "run", "request": 1, "slot": 0, "jobs": [wire]}, parts)
    back = messages.job_from_wire(json.loads(json.dumps(wire)), parts)
    assert back == job and back.record() == job.record()
    assert back.image.tobytes() == source.tobytes() and back.image.size == (32, 16)
    assert back.reference_images[0].mode == "L"


def test_a_run_whose_pictures_do_not_match_its_parts_is_invalid():
    wire = messages.job_to_wire(Job(prompt="p", seed=1, steps=1, width=8, height=8), [])
    with pytest.raises(messages.Invalid, match="pictures do not match"):
        messages.from_bot({"kind": "run", "request": 1, "slot": 0, "jobs": [wire]}, [b"x"])


def test_the_spec_and_its_recipe_round_trip(tmp_path):
    recipe = Recipe(
        catalogue={"tiny": tmp_path / "tiny", "other": tmp_path / "other"},
        pool=True,
        max_loaded_models=2,
        size=(512, 768),
        guidance=3.5,
        engine_options=dict(
            vae=None,
            fast_decoder=tmp_path / "taesd",
            compile=True,
            cache_dir=tmp_path / "cache",
            loras={"ink": tmp_path / "ink.safetensors"},
            quantize="int8",
            offload="none",
        ),
        upscaler=tmp_path / "4x.pth",
    )
    spec = ClusterSpec(
        address="10.0.0.5:6379",
        namespace="imgbot",
        workers=2,
        resources={"GPU": 1.0},
        recipe=recipe,
        token_path="/run/token",
    )
    wire = json.loads(json.dumps(messages.spec_to_wire(spec)))
    assert messages.spec_from_wire(wire) == spec
    assert list(messages.recipe_from_wire(wire["recipe"]).catalogue) == ["tiny", "other"]

    # Socket mode: the bridge uses its own unit's token, and is told no path.
    own = messages.spec_to_wire(ClusterSpec(**{**spec.__dict__, "bridge_socket": "/s"}))
    assert own["token_path"] is None and own["own_token"] is True


def test_a_picture_is_read_as_png_only_and_of_the_size_asked():
    assert messages.picture(_png((64, 48)), (64, 48)).size == (64, 48)
    with pytest.raises(messages.Invalid, match="not 64x64"):
        messages.picture(_png((64, 48)), (64, 64))
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 48)).save(jpeg, format="JPEG")
    with pytest.raises(messages.Invalid, match="not a PNG"):
        messages.picture(jpeg.getvalue(), (64, 48))
    with pytest.raises(messages.Invalid):
        messages.picture(_png((64, 48))[:-40], (64, 48))  # cut short


# ---- what a cluster member says, as the bot repeats it ------------------------------------

HOSTILE = (
    "\x1b[2J\x1b[31mYour account is suspended.\nLog in again at https://evil.example"
    "\u202e\u200b " + "x" * 10_000
)


def test_a_workers_error_becomes_one_clean_attributed_line():
    header = messages.from_bridge({"kind": "done", "request": 3, "error": HOSTILE}, [])
    said = header["error"]
    assert said.startswith("the GPU worker said: Your account is suspended. Log in again")
    assert len(said) <= len("the GPU worker said: ") + messages.MAX_SAID
    assert said.isprintable() and "\x1b" not in said and "\u202e" not in said
    # The bridge's own refusal stays the bot's words.
    assert (
        messages.from_bridge({"kind": "done", "request": 3, "error": messages.NOT_VALID}, [])[
            "error"
        ]
        == messages.NOT_VALID
    )


def test_why_a_batch_was_lost_is_one_clean_line_attributed_to_the_worker():
    # A worker's own exception message (a RayTaskError's last line): after MAX_LOST losses
    # the person who asked reads it, so it is said as a worker's error is.
    lost = messages.from_bridge({"kind": "lost", "request": 3, "words": HOSTILE}, [])["words"]
    assert lost.startswith("the GPU worker said: Your account is suspended. Log in again")
    assert len(lost) <= len("the GPU worker said: ") + messages.MAX_SAID
    assert lost.isprintable() and "\u202e" not in lost


def test_log_lines_problems_and_survey_errors_from_the_bridge_are_one_clean_line():
    line = messages.from_bridge({"kind": "log", "level": 40, "words": HOSTILE}, [])["words"]
    assert line.isprintable() and len(line) <= messages.MAX_LOG_LINE
    slot = messages.from_bridge(
        {"kind": "slot", "slot": 0, "state": "failed", "generation": 1, "problem": HOSTILE}, []
    )
    assert slot["problem"].isprintable() and len(slot["problem"]) <= messages.MAX_LOG_LINE
    survey = messages.from_bridge(
        {
            "kind": "survey",
            "room": 0,
            "workers": [{"worker": "gpu1 #0 (node abcdef12)", "error": HOSTILE}],
        },
        [],
    )
    assert survey["workers"][0]["error"].startswith("the GPU worker said: Your account")
    assert survey["workers"][0]["error"].isprintable()


@pytest.mark.parametrize(
    "field, value",
    [
        ("worker", "gpu1\x1b[2J"),
        ("worker", "gpu1\nERROR: the bot's token is …"),
        ("host", "gpu\u202e1"),
        ("device", "cuda:0\r"),
        ("models", ["tiny\x1b]0;x\x07"]),
        ("worker", "g" * 201),
        ("versions", {"ray": "2.4\x1b[0m"}),
    ],
)
def test_a_worker_name_of_other_than_plain_characters_is_refused(field, value):
    info = {
        "worker": "gpu1 #0 (node abcdef12)",
        "host": "gpu1",
        "node": "abcdef12",
        "slot": 0,
        "auth": "token",
        "versions": {"imgbot": "1.0+g12ab"},
        "device": "cuda:0",
        "models": ["tiny", "sdxl-turbo_v1.0"],
    }
    assert messages.ready_answer(dict(info)) == info  # plain names pass
    with pytest.raises(messages.Invalid, match="plain characters"):
        messages.ready_answer({**info, field: value})
    with pytest.raises(messages.Invalid, match="plain characters"):
        messages.from_bridge({"kind": "survey", "room": 0, "workers": [{**info, field: value}]}, [])


# ---- parts only where they are waited for --------------------------------------------------


def test_a_frame_whose_parts_are_not_admitted_is_refused_before_they_are_read():
    header = {"kind": "done", "request": 999, "worker": "w", "seconds": 1.0, "counts": [1]}
    text = json.dumps(header).encode()
    # It announces a part of 300 MiB; the stream holds only its start.
    stream = io.BytesIO(
        struct.pack("!III", len(text), 1, 300 * 1024 * 1024)
        + text
        + struct.pack("!I", 300 * 1024 * 1024)
        + b"\0" * 16
    )
    seen = []

    def admit(got, count, total):
        seen.append((got, count, total))
        raise frames.FrameError("no batch waits for it")

    with pytest.raises(frames.FrameError, match="no batch waits"):
        frames.receive(stream, admit)
    assert seen == [(header, 1, 300 * 1024 * 1024)]
    assert stream.tell() == 12 + len(text)  # not one byte of the parts was read


def test_a_workers_png_bound_holds_an_uncompressed_png():
    image = Image.frombytes("RGBA", (300, 200), os.urandom(300 * 200 * 4))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=0)
    # and not much more: four bytes a pixel, some overhead
    assert len(buffer.getvalue()) <= messages.png_bound(300, 200) < 300 * 201 * 4 * 1.01 + 65536
