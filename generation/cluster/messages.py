"""What crosses between the bot, its bridge and the workers, as plain JSON-ready values of a
fixed form, and the check each side makes of what it receives before it uses it.

The cluster is a trust boundary (README "More than one GPU server"): a member of it can
make a worker answer anything. The bridge checks each worker's answer (`ready_answer`,
`run_answer`, `progress_answer`); the bot checks each frame from the bridge (`from_bridge`),
and the pictures themselves (`remote`). A value that does not fit is `Invalid`: dropped,
and the batch or the worker fails with NOT_VALID, never used as it came.

The jobs, the recipe and the spec travel as dicts written field by field (`*_to_wire`,
`*_from_wire`), the pictures of a job as PNG parts of the frame.
"""

from __future__ import annotations

import io
import math
import re
import unicodedata
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import ClusterError
from ..job import KINDS, Job
from ..models.recipe import Recipe
from ..scheduling.progress import Progress
from .spec import ClusterSpec

NOT_VALID = "the worker returned something that is not a valid answer"
MAX_TEXT = 16_384  # a name, a model, an error's words, a log line
MAX_LONG = 400_000  # a prompt (limits.max_prompt_chars is at most 100,000)
MAX_ITEMS = 1024  # items of a list or a map
MAX_BYTES = 320 * 1024 * 1024  # one picture (frames.MAX_PART)
# A worker's, host's, node's, device's or model's name, and a version, as a worker tells
# them: plain characters only, since they reach the admin's terminal (`imgbot check`), the
# log and a picture's metadata; anything else is refused, not cleaned.
NAME_CHARACTERS = re.compile(r"[A-Za-z0-9 ._:#()@/+,=\[\]-]*")
MAX_NAME = 200
# The words of a worker's error as the bot repeats them (to the person, in the log): one
# line, at most this long, and said to be the worker's, never the bot's own.
MAX_SAID = 200
MAX_LOG_LINE = 2000  # a log line of the bridge's, cleaned the same way
# A terminal's escape sequences (CSI, OSC, and two-character ones), removed whole so that
# their parameters do not stay behind as text.
TERMINAL_CODES = re.compile(
    r"(\x1b\[|\x9b)[0-?]*[ -/]*[@-~]|(\x1b\]|\x9d)[^\x07\x1b\x9c]*"
    r"(\x07|\x1b\\|\x9c)?|\x1b[@-_]"
)


class Invalid(ClusterError):
    """A value that does not have the form its message asks for; the words say where."""


# ---- forms -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    most: int = MAX_TEXT


@dataclass(frozen=True)
class Name:
    """A name of plain characters (NAME_CHARACTERS), at most `most` long."""

    most: int = MAX_NAME


@dataclass(frozen=True)
class Maybe:
    form: Any


@dataclass(frozen=True)
class ListOf:
    form: Any
    most: int = MAX_ITEMS


@dataclass(frozen=True)
class MapOf:
    form: Any  # of Text keys


@dataclass(frozen=True)
class OneOf:
    choices: tuple[str, ...]


@dataclass(frozen=True)
class Fields:
    required: dict
    optional: dict | None = None


def check(value: Any, form: Any, where: str = "the message") -> Any:
    """`value` when it has `form` (exact builtin types: no subclass, no bool for an int);
    Invalid naming where it does not."""
    if form is str:
        form = Text()
    if isinstance(form, Text):
        if type(value) is not str or len(value) > form.most:
            raise Invalid(f"{where} is not a text of at most {form.most} characters")
    elif isinstance(form, Name):
        if type(value) is not str or len(value) > form.most or not NAME_CHARACTERS.fullmatch(value):
            raise Invalid(f"{where} is not a name of at most {form.most} plain characters")
    elif form is int:
        if type(value) is not int or abs(value) > 2**53:
            raise Invalid(f"{where} is not a whole number")
    elif form is float:
        if type(value) not in (int, float) or not math.isfinite(value):
            raise Invalid(f"{where} is not a number")
    elif form is bool:
        if type(value) is not bool:
            raise Invalid(f"{where} is not true or false")
    elif form is bytes:
        if type(value) is not bytes or len(value) > MAX_BYTES:
            raise Invalid(f"{where} is not bytes of at most {MAX_BYTES}")
    elif isinstance(form, OneOf):
        if type(value) is not str or value not in form.choices:
            raise Invalid(f"{where} is not one of {', '.join(form.choices)}")
    elif isinstance(form, Maybe):
        if value is not None:
            check(value, form.form, where)
    elif isinstance(form, ListOf):
        if type(value) is not list or len(value) > form.most:
            raise Invalid(f"{where} is not a list of at most {form.most}")
        for index, item in enumerate(value):
            check(item, form.form, f"{where}[{index}]")
    elif isinstance(form, MapOf):
        if type(value) is not dict or len(value) > MAX_ITEMS:
            raise Invalid(f"{where} is not a map of at most {MAX_ITEMS}")
        for key, item in value.items():
            check(key, str, f"a key of {where}")
            check(item, form.form, f"{where}[{key!r}]")
    elif isinstance(form, Fields):
        optional = form.optional or {}
        if type(value) is not dict:
            raise Invalid(f"{where} is not a dict but a {type(value).__name__}")
        unknown = [key for key in value if key not in form.required and key not in optional]
        missing = [key for key in form.required if key not in value]
        if unknown or missing:
            raise Invalid(
                f"{where} has unknown fields {sorted(map(str, unknown))} or lacks {missing}"
            )
        for key, item in value.items():
            check(item, form.required.get(key, optional.get(key)), f"{where}.{key}")
    else:  # a form this module does not know: a bug here, not the sender's
        raise TypeError(f"no such form: {form!r}")
    return value


# ---- what a worker answers (checked by the bridge) ---------------------------------------

VERSIONS = MapOf(Name(128))
INFO = Fields(
    {"worker": Name()},
    {
        "host": Name(),
        "node": Name(),
        "slot": int,
        "versions": VERSIONS,
        "auth": Name(),
        "device": Name(),
        "models": ListOf(Name()),
        "error": str,
    },
)
RUN = Fields({"images": ListOf(ListOf(bytes)), "worker": Name(), "seconds": float})
FAILED = Fields({"error": str})
PROGRESS = Fields(
    {"done": int, "total": int, "unit": OneOf(("step", "tile")), "part": int, "parts": int}
)


def ready_answer(value: Any) -> dict:
    """A worker's ready(): who it is and what it runs, or its "error"."""
    check(value, INFO, "the worker's ready answer")
    if "error" not in value and not {"device", "models", "versions", "host"} <= value.keys():
        raise Invalid("the worker's ready answer names neither its models nor an error")
    return value


def run_answer(value: Any) -> dict:
    """A worker's run(): {"images", "worker", "seconds"} or {"error"}."""
    return check(
        value,
        FAILED if type(value) is dict and "error" in value else RUN,
        "the worker's run answer",
    )


def progress_answer(value: Any) -> dict | None:
    """A worker's progress(): PROGRESS as `progress_to_wire` makes it, or None."""
    return None if value is None else check(value, PROGRESS, "the worker's progress")


def progress_to_wire(value: Progress) -> dict:
    return {
        "done": value.done,
        "total": value.total,
        "unit": value.unit,
        "part": value.part,
        "parts": value.parts,
    }


def progress_from_wire(value: dict) -> Progress:
    return Progress(value["done"], value["total"], value["unit"], value["part"], value["parts"])


# ---- the frames from the bridge (checked by the bot) -------------------------------------

SLOT_STATES = ("starting", "up", "failed", "down")
FROM_BRIDGE = {
    "connected": Fields({"nodes": int, "auth": Name(), "versions": VERSIONS}),
    "refused": Fields({"words": str, "token_refused": bool}),
    "survey": Fields({"workers": ListOf(INFO), "room": int}),
    "slot": Fields(
        {"slot": int, "state": OneOf(SLOT_STATES), "generation": int},
        {"info": INFO, "problem": str},
    ),
    "progress": Fields({"request": int, "progress": PROGRESS}),
    "done": Fields(
        {"request": int}, {"worker": Name(), "seconds": float, "counts": ListOf(int), "error": str}
    ),
    "lost": Fields({"request": int, "words": str}),
    "log": Fields({"level": int, "words": str}),
}


def from_bridge(header: dict, parts: list[bytes]) -> dict:
    """A frame from the bridge, checked: a known kind, its fields of their types, names of
    plain characters, and parts only where a "done" counts them. Returned with its free
    words (an error, a problem, a log line) each made one clean line (`one_line`): the
    bridge and the workers are the cluster's, and what they say must not print as many
    lines, terminal codes or a screenful."""
    kind = header.get("kind")
    if kind not in FROM_BRIDGE:
        raise Invalid(f"a frame of unknown kind {str(kind)[:40]!r}")
    body = {key: value for key, value in header.items() if key != "kind"}
    check(body, FROM_BRIDGE[kind], f"a {kind!r} frame")
    if kind == "done":
        made = {"worker", "seconds", "counts"} <= body.keys() and "error" not in body
        if not made and set(body) != {"request", "error"}:
            raise Invalid("a 'done' frame is neither pictures nor an error")
        wanted = sum(body["counts"]) if made else 0
        if any(count < 0 for count in body.get("counts", ())) or wanted != len(parts):
            raise Invalid(f"a 'done' frame counts {wanted} picture(s) and carries {len(parts)}")
    elif parts:
        raise Invalid(f"a {kind!r} frame carries parts")
    if kind == "slot" and (body["state"] == "up") != ("info" in body):
        raise Invalid("a 'slot' frame has its worker's facts only when it is up")
    for info in [*body.get("workers", []), *([body["info"]] if "info" in body else [])]:
        ready_answer(info)  # its models, or why not
    return _cleaned(header)


def _cleaned(header: dict) -> dict:
    clean = dict(header)
    if "error" in clean:  # a batch's error: the person who asked reads it
        clean["error"] = said(clean["error"])
    for key in ("words", "problem"):  # the log's and `imgbot check`'s
        if key in clean:
            clean[key] = one_line(clean[key], MAX_LOG_LINE)
    if clean["kind"] == "lost":  # why a batch was lost: the person who asked may read it
        clean["words"] = said(header["words"])  # (the queue's give_back, after MAX_LOST losses)
    if "info" in clean:
        clean["info"] = _cleaned_info(clean["info"])
    if "workers" in clean:
        clean["workers"] = [_cleaned_info(info) for info in clean["workers"]]
    return clean


def _cleaned_info(info: dict) -> dict:
    return {**info, "error": said(info["error"])} if "error" in info else info


def one_line(text: str, most: int) -> str:
    """`text` as one line: control and format characters (terminal codes, bidirectional
    overrides, zero-width ones) removed, every run of white space one space, at most
    `most` characters (cut with an ellipsis)."""
    text = TERMINAL_CODES.sub("", text)
    kept = "".join(
        " " if character.isspace() else character
        for character in text
        if character.isspace() or unicodedata.category(character)[0] != "C"
    )
    line = " ".join(kept.split())
    return line if len(line) <= most else line[: most - 1] + "…"


def said(words: str) -> str:
    """A worker's error as the bot repeats it (to the person who asked, in the log, in
    `imgbot check`): one clean line of at most MAX_SAID, attributed to the worker, so that
    a cluster member cannot make the bot say something in its own voice. The bridge's own
    NOT_VALID stays as it is: it is the bot's words."""
    line = one_line(words, MAX_SAID)
    return line if line == NOT_VALID else f"the GPU worker said: {line}"


# ---- what the bot sends (checked by the bridge, read by the workers) ----------------------

RECIPE = Fields(
    {
        "catalogue": MapOf(str),
        "pool": bool,
        "device": str,
        "max_loaded_models": Maybe(int),
        "engine_options": Fields(
            {
                "vae": Maybe(str),
                "fast_decoder": Maybe(str),
                "compile": bool,
                "cache_dir": Maybe(str),
                "loras": MapOf(str),
                "quantize": str,
                "offload": str,
            }
        ),
        "warm_up": bool,
        "size": ListOf(int, 2),
        "guidance": float,
        "max_batch": int,
        "upscaler": Maybe(str),
    }
)
SPEC = Fields(
    {
        "address": str,
        "namespace": str,
        "workers": int,
        "resources": MapOf(float),
        "recipe": RECIPE,
        "token_path": Maybe(str),
        "own_token": bool,
        "allow_unauthenticated": bool,
        "survey": bool,
        "versions": VERSIONS,
    }
)
# A job's record (Job.record) field by field, its form from the Job's own annotations, so
# that a field added there travels without a second list here; kind is one of KINDS.
_RECORD_FORMS = {
    "str": Text(MAX_LONG),
    "int": int,
    "float": float,
    "bool": bool,
    "tuple[str, ...]": ListOf(Text(MAX_LONG)),
}
JOB = Fields(
    {
        **{
            item.name: _RECORD_FORMS[item.type]
            for item in fields(Job)
            if item.name not in ("image", "reference_images")
        },
        "kind": OneOf(KINDS),
        "image": Maybe(int),
        "reference_images": ListOf(int),
    }
)
FROM_BOT = {
    "hello": Fields({"spec": SPEC}),
    "run": Fields({"request": int, "slot": int, "jobs": ListOf(JOB)}),
}


def from_bot(header: dict, parts: list[bytes]) -> dict:
    """A frame from the bot, checked as `from_bridge` checks the other way."""
    kind = header.get("kind")
    if kind not in FROM_BOT:
        raise Invalid(f"a frame of unknown kind {str(kind)[:40]!r}")
    body = {key: value for key, value in header.items() if key != "kind"}
    check(body, FROM_BOT[kind], f"a {kind!r} frame")
    used = [
        index
        for job in body.get("jobs", ())
        for index in ([job["image"]] if job["image"] is not None else []) + job["reference_images"]
    ]
    if sorted(used) != list(range(len(parts))):
        raise Invalid(f"a {kind!r} frame's pictures do not match its parts")
    return header


_ENGINE_PATHS = ("vae", "fast_decoder", "cache_dir")


def recipe_to_wire(recipe: Recipe) -> dict:
    options = recipe.engine_options
    return {
        "catalogue": {name: str(folder) for name, folder in recipe.catalogue.items()},
        "pool": recipe.pool,
        "device": recipe.device,
        "max_loaded_models": recipe.max_loaded_models,
        "engine_options": {
            **{
                key: None if options.get(key) is None else str(options[key])
                for key in _ENGINE_PATHS
            },
            "compile": bool(options.get("compile", False)),
            "loras": {name: str(path) for name, path in (options.get("loras") or {}).items()},
            "quantize": options.get("quantize", "none"),
            "offload": options.get("offload", "auto"),
        },
        "warm_up": recipe.warm_up,
        "size": list(recipe.size),
        "guidance": recipe.guidance,
        "max_batch": recipe.max_batch,
        "upscaler": None if recipe.upscaler is None else str(recipe.upscaler),
    }


def recipe_from_wire(value: dict) -> Recipe:
    check(value, RECIPE, "the recipe")
    options = dict(value["engine_options"])
    options.update(
        {key: None if options[key] is None else Path(options[key]) for key in _ENGINE_PATHS}
    )
    options["loras"] = {name: Path(path) for name, path in options["loras"].items()}
    return Recipe(
        catalogue={name: Path(folder) for name, folder in value["catalogue"].items()},
        pool=value["pool"],
        device=value["device"],
        max_loaded_models=value["max_loaded_models"],
        engine_options=options,
        warm_up=value["warm_up"],
        size=tuple(value["size"]),
        guidance=float(value["guidance"]),
        max_batch=value["max_batch"],
        upscaler=None if value["upscaler"] is None else Path(value["upscaler"]),
    )


def spec_to_wire(spec: ClusterSpec) -> dict:
    """The spec as the bridge gets it: without a token path when the bridge uses the token
    of its own environment (socket mode, `own_token`)."""
    own = spec.bridge_socket is not None
    return {
        "address": spec.address,
        "namespace": spec.namespace,
        "workers": spec.workers,
        "resources": dict(spec.resources),
        "recipe": recipe_to_wire(spec.recipe),
        "token_path": None if own else spec.token_path,
        "own_token": own,
        "allow_unauthenticated": spec.allow_unauthenticated,
        "survey": spec.survey,
        "versions": dict(spec.versions),
    }


def spec_from_wire(value: dict) -> ClusterSpec:
    check(value, SPEC, "the spec")
    return ClusterSpec(
        address=value["address"],
        namespace=value["namespace"],
        workers=value["workers"],
        resources={key: float(amount) for key, amount in value["resources"].items()},
        recipe=recipe_from_wire(value["recipe"]),
        token_path=value["token_path"],
        own_token=value["own_token"],
        allow_unauthenticated=value["allow_unauthenticated"],
        survey=value["survey"],
        versions=dict(value["versions"]),
    )


def job_to_wire(job: Job, parts: list[bytes]) -> dict:
    """The job's record, with its pictures appended to `parts` (as PNG) and named by their
    index there."""

    def part(image) -> int:
        parts.append(png(image))
        return len(parts) - 1

    return {
        **job.record(),
        "image": None if job.image is None else part(job.image),
        "reference_images": [part(image) for image in job.reference_images],
    }


def job_from_wire(value: dict, parts: list[bytes]) -> Job:
    check(value, JOB, "a job")
    record = {key: item for key, item in value.items() if key not in ("image", "reference_images")}
    record["references"] = tuple(record["references"])
    image = value["image"]
    return Job(
        **record,
        image=None if image is None else picture(parts[image]),
        reference_images=tuple(picture(parts[index]) for index in value["reference_images"]),
    )


def png(image: Image.Image, level: int = 1) -> bytes:
    """A picture as PNG bytes (a mode PNG cannot hold, CMYK say, as RGB). A worker's are
    uncompressed (level 0 costs no deflate on a busy host): the bot encodes the picture
    again with its parameters, marks and signature, so these only carry the pixels."""
    buffer = io.BytesIO()
    try:
        image.save(buffer, format="PNG", compress_level=level)
    except OSError:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG", compress_level=level)
    return buffer.getvalue()


def png_bound(width: int, height: int) -> int:
    """The most bytes a worker's PNG of width×height takes: uncompressed (level 0), 4 bytes
    a pixel and one a row, the stored blocks' and chunks' overhead (under 1/1024), and
    64 KiB for the chunks around the pixels."""
    raw = height * (1 + 4 * width)
    return raw + raw // 1024 + 64 * 1024


def picture(data: bytes, size: tuple[int, int] | None = None) -> Image.Image:
    """PNG bytes as a picture, read as PNG only; Invalid when they are not a PNG, or not of
    `size` (checked before the pixels are read, so a bomb is never decoded)."""
    try:
        image = Image.open(io.BytesIO(data), formats=["PNG"])
    except (OSError, ValueError, Image.DecompressionBombError):
        raise Invalid("a picture is not a PNG") from None
    if size is not None and image.size != tuple(size):
        raise Invalid(f"a picture is {image.width}x{image.height}, not {size[0]}x{size[1]}")
    try:
        image.load()
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError):
        raise Invalid("a picture is not a readable PNG") from None
    return image
