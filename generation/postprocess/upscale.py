"""Upscaling: an AI upscaler loaded with spandrel from a local file, run in tiles so that
8× of a 1024² picture fits in limited memory; a Lanczos resize when none is configured."""

from __future__ import annotations

import enum
import logging
import math
import sys
import time
import types
from pathlib import Path

from PIL import Image

from ..errors import ImgbotError
from ..job import GenerationError
from ..scheduling import progress

log = logging.getLogger(__name__)

FACTORS = (2, 4, 8)
# A pass may make up to this many pixels before it is scaled down to the asked size; beyond
# it, the input of the last pass is scaled down first instead (less memory, a little less
# detail). 8× of 1024² with a 4× model: 1024² -> 4096², then 2048² -> 8192².
OVERSHOOT_PIXELS = 64 * 2**20
OVERLAP = 16  # pixels of context around each tile, so that tile seams do not show


class UpscalerError(ImgbotError):
    """The upscaler file cannot be used; the message says why."""


def import_spandrel():
    """spandrel, also where torchvision cannot be imported.

    spandrel imports torchvision for two architectures that are not upscalers (LaMa
    inpainting, RestoreFormer faces). PyPI has no CPU build of torchvision, so on a machine
    with the CPU build of torch it is missing or fails to load; there a stand-in with the
    two functions those architectures name lets spandrel load, and loading one of those two
    architectures says that it needs the real torchvision."""
    try:
        import spandrel

        return spandrel
    except (ImportError, RuntimeError, OSError) as exc:
        log.debug("spandrel needs a stand-in for torchvision (%s)", exc)
    _forget("torchvision", "spandrel")
    _install_torchvision_stand_in()
    try:
        import spandrel
    finally:
        # spandrel keeps what it took from the stand-in; nothing else may find it (other
        # libraries ask whether torchvision is installed, and it is not).
        _forget("torchvision")
    return spandrel


def _forget(*packages: str) -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in packages:
            del sys.modules[name]


def _install_torchvision_stand_in() -> None:
    def needs_torchvision(*args, **kwargs):
        raise GenerationError(
            "this model architecture needs torchvision, which is not "
            "installed here; upscalers (ESRGAN, SwinIR, …) do not"
        )

    def normalize(tensor, mean, std, inplace=False):
        import torch

        mean = torch.as_tensor(mean, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        std = torch.as_tensor(std, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        return tensor.sub_(mean).div_(std) if inplace else (tensor - mean) / std

    functional = types.ModuleType("torchvision.transforms.functional")
    functional.InterpolationMode = enum.Enum("InterpolationMode", "NEAREST BILINEAR BICUBIC")
    functional.normalize = normalize
    functional.rotate = needs_torchvision
    transforms = types.ModuleType("torchvision.transforms")
    transforms.functional = functional
    torchvision = types.ModuleType("torchvision")
    torchvision.transforms = transforms
    torchvision.__imgbot_stand_in__ = True
    sys.modules.update(
        {
            "torchvision": torchvision,
            "torchvision.transforms": transforms,
            "torchvision.transforms.functional": functional,
        }
    )


class Upscaler:
    """Upscales pictures by 2, 4 or 8 with the model file at `path`, or with Lanczos when
    `path` is None. Call from the GPU worker thread only."""

    def __init__(self, path: Path | None, device: str = "cpu", tile: int | None = None):
        self.path = path
        self.device = device
        # Tiles of 512² keep a 4× ESRGAN under about 2 GB of GPU memory; on the CPU smaller
        # tiles cost nothing and keep the peak low.
        self.tile = tile or (512 if device.startswith("cuda") else 256)
        self.model = None
        self.scale = 1

    @property
    def name(self) -> str:
        return self.path.name if self.path else "Lanczos"

    @property
    def loaded(self) -> bool:
        return self.model is not None

    def load(self) -> None:
        if self.path is None or self.model is not None:
            return
        import torch

        try:
            spandrel = import_spandrel()
        except ImportError as exc:
            raise UpscalerError(
                f"spandrel is not installed ({exc}): pip install 'imgbot[upscale]'"
            ) from None
        try:
            descriptor = spandrel.ModelLoader(device=torch.device(self.device)).load_from_file(
                self.path
            )
        except Exception as exc:  # noqa: BLE001
            # Whatever a file that is not a usable model raises (safetensors' and pickle's
            # own errors among them) means one thing to the operator.
            raise UpscalerError(
                f"{self.path} is not a model spandrel can load: {type(exc).__name__}: {exc}"
            ) from None
        if (
            not isinstance(descriptor, spandrel.ImageModelDescriptor)
            or descriptor.scale < 2
            or descriptor.input_channels != 3
            or descriptor.output_channels != 3
        ):
            raise UpscalerError(
                f"{self.path} holds a model of architecture "
                f"{descriptor.architecture.name} with scale "
                f"{descriptor.scale}: not an RGB upscaler (2x or more)"
            )
        descriptor.eval()
        if self.device.startswith("cuda") and descriptor.supports_half:
            descriptor.half()
        self.model, self.scale = descriptor, descriptor.scale
        log.info(
            "upscaler %s loaded: %s, %d×",
            self.path.name,
            descriptor.architecture.name,
            descriptor.scale,
        )

    def warm_up(self) -> None:
        """One tiny run, so that the first `!img upscale` does not pay for kernel setup."""
        if self.path is not None:
            self.upscale(Image.new("RGB", (32, 32)), 2)

    def upscale(self, image: Image.Image, factor: int) -> Image.Image:
        """The picture `factor` times wider and higher."""
        if factor not in FACTORS:
            raise GenerationError(f"upscale by 2, 4 or 8, not {factor}")
        image = image.convert("RGB")
        target = (image.width * factor, image.height * factor)
        if self.path is None:
            return image.resize(target, Image.Resampling.LANCZOS)
        self.load()
        started = time.perf_counter()
        current, passes = image, 0
        # How many passes it takes, for the progress of each pass's tiles.
        planned = math.ceil(math.log(factor) / math.log(self.scale)) if self.scale > 1 else 1
        while current.width < target[0]:
            made = current.width * self.scale * current.height * self.scale
            if current.width * self.scale > target[0] and made > OVERSHOOT_PIXELS:
                # The last pass would overshoot by too much: scale its input down so that
                # it lands on the target.
                current = current.resize(
                    (math.ceil(target[0] / self.scale), math.ceil(target[1] / self.scale)),
                    Image.Resampling.LANCZOS,
                )
            passes += 1
            current = self._run_tiled(current, passes, max(planned, passes))
        if current.size != target:
            current = current.resize(target, Image.Resampling.LANCZOS)
        log.info(
            "upscaled %dx%d by %d in %d passes, %.2f s",
            image.width,
            image.height,
            factor,
            passes,
            time.perf_counter() - started,
        )
        return current

    def _run_tiled(self, image: Image.Image, part: int = 1, parts: int = 1) -> Image.Image:
        """One pass of the model over the picture, a tile at a time; the output is built in
        an 8-bit buffer, so memory grows with the picture, not with the model's floats."""
        import numpy as np
        import torch

        # np.array copies: torch wants a writable array (it warns on PIL's read-only view).
        source = torch.from_numpy(np.array(image)).permute(2, 0, 1)  # uint8, C×H×W
        height, width, scale = image.height, image.width, self.scale
        out = np.empty((height * scale, width * scale, 3), dtype=np.uint8)
        tile = self.tile
        y, done = 0, 0
        while y < height:
            x = 0
            while x < width:
                try:
                    out_tile = self._tile(source, x, y, tile)
                except torch.cuda.OutOfMemoryError:
                    out_tile = None
                if out_tile is None:
                    # Out of the except block: inside it, the error's traceback still holds
                    # the tile's activations, which empty_cache could then not hand back.
                    torch.cuda.empty_cache()
                    if tile <= 64:
                        raise GenerationError(
                            "the GPU ran out of memory while upscaling, even in small tiles"
                        ) from None
                    tile //= 2
                    log.warning("upscaling tile did not fit in GPU memory; now %d²", tile)
                    continue
                x1, y1 = min(x + tile, width), min(y + tile, height)
                out[y * scale : y1 * scale, x * scale : x1 * scale] = out_tile
                x = x1
                done += 1
                # The tiles of this pass at the current tile size (it halves on OOM).
                total = (
                    done
                    + math.ceil((width - x) / tile)
                    + math.ceil((height - min(y + tile, height)) / tile) * math.ceil(width / tile)
                )
                progress.report(
                    done, total, "tile", part if parts > 1 else 0, parts if parts > 1 else 0
                )
            y = min(y + tile, height)
        return Image.fromarray(out)

    def _tile(self, source, x: int, y: int, tile: int):
        import torch

        _, height, width = source.shape
        x1, y1 = min(x + tile, width), min(y + tile, height)
        # Read a margin around the tile and keep only the middle of the result.
        px, py = max(0, x - OVERLAP), max(0, y - OVERLAP)
        px1, py1 = min(width, x1 + OVERLAP), min(height, y1 + OVERLAP)
        dtype = next(self.model.model.parameters()).dtype
        chunk = source[:, py:py1, px:px1].unsqueeze(0).to(self.device, dtype) / 255
        with torch.inference_mode():
            result = self.model(chunk)[0]
        s = self.scale
        keep = result[:, (y - py) * s : (y1 - py) * s, (x - px) * s : (x1 - px) * s]
        return keep.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
