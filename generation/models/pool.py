"""Several named models on one device: each loads on first use, and the least recently used
is unloaded when the next one would not fit.

The queue's worker thread is the only caller once the bot runs (`load` and `warm_up` are
called at start, before the worker exists), so the pool needs no lock: loading, unloading
and generating never overlap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from ..families.known import Family
from ..families.model_folder import ModelError, unknown_model
from ..job import GenerationError, Job
from ..runtime.device import choose
from ..runtime.memory import cuda_free
from ..scheduling.runner import LocalRunner
from .engine import Engine

log = logging.getLogger(__name__)

GIB = 1024**3


def free_bytes(device: str) -> int | None:
    """Memory free for new weights on `device`, or None where it cannot be known."""
    if device.startswith("cuda"):
        return cuda_free(device)
    if device == "cpu":
        return _mem_available()
    return None  # mps shares the system's memory and has no cheap, honest probe


def _mem_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the kernel writes kB
    except (OSError, ValueError, IndexError):
        pass
    return None


class ModelPool(LocalRunner):
    """The queue's runner when several models are configured: `generate` runs each job on
    the model it names (`job.model`, "" for the default), loading that model first if need
    be. Before a load, least recently used models are unloaded while `max_loaded` are
    loaded or the device's free memory is under the new model's need (Engine.memory_need)."""

    def __init__(
        self,
        folders: Mapping[str, str | Path],
        default: str,
        device: str = "auto",
        max_loaded: int | None = None,
        free_memory: Callable[[], int | None] | None = None,
        *,
        vae: str | Path | None = None,
        fast_decoder: str | Path | None = None,
        compile: bool = False,
        cache_dir: str | Path | None = None,  # noqa: A002
        loras: Mapping[str, str | Path] | None = None,
        quantize: str = "none",
        offload: str = "auto",
    ):
        if default not in folders:
            raise ValueError(f"the default model {default!r} is not among {list(folders)}")
        self.name = default
        self.max_loaded = max_loaded
        # Every model gets the options (Engine says what they are); a VAE made for another
        # family than a model's is left out for that model, with a warning, when it loads.
        options = dict(
            vae=vae,
            fast_decoder=fast_decoder,
            compile=compile,
            cache_dir=cache_dir,
            quantize=quantize,
            offload=offload,
        )
        # Raises ModelError for a folder that is not a model, naming the folder.
        # The LoRAs go onto the default model, the one they are configured for.
        self._engines = {
            name: Engine(
                folders[name],
                device,
                name,
                **options,
                loras=dict(loras or {}) if name == default else None,
            )
            for name in [default, *(n for n in folders if n != default)]
        }
        self._free_memory = free_memory or (lambda: free_bytes(choose(device).device))
        self._loaded: list[str] = []  # least recently used first

    @property
    def models(self) -> list[str]:
        """The configured names, the default first."""
        return list(self._engines)

    @property
    def placement(self):
        """Where the models run (they share one device): the default model's placement,
        None before it is loaded."""
        return self._engines[self.name].placement

    @property
    def loaded(self) -> list[str]:
        """The names loaded now, the most recently used last."""
        return list(self._loaded)

    def native_size(self, name: str = "") -> tuple[int, int]:
        """The (width, height) the model was trained at, read from its folder: nothing loads."""
        return self._engine(name).native_size()

    def family_of(self, name: str = "") -> Family:
        """What the model can do, read from its folder: nothing loads."""
        return self._engine(name).family_of()

    def generate(self, job: Job) -> list:
        engine = self._engine(job.model)
        self._load_for_jobs(engine.name)
        return engine.generate(job)

    def batch_key(self, job: Job) -> tuple | None:
        """What jobs must share to be made in one `generate_batch` call (Engine.batch_key);
        the model's name is part of it. Reads no weights: the model may be unloaded."""
        engine = self._engines.get(job.model or self.name)
        return engine.batch_key(job) if engine is not None else None

    def generate_batch(self, jobs: list[Job]) -> list[list]:
        """Jobs of one `batch_key` in one pipeline call of their model (Engine.generate_batch,
        which refuses jobs of another model or shape)."""
        if not jobs:
            return []
        engine = self._engine(jobs[0].model)
        self._load_for_jobs(engine.name)
        return engine.generate_batch(jobs)

    def warm_up(self, width: int, height: int, steps: int = 1, **options) -> float:
        """Load the default model and warm it up (Engine.warm_up: `sizes`, `guidance`,
        `batch`); the others warm up on their first job."""
        self.load()
        return self._engines[self.name].warm_up(width, height, steps, **options)

    def load(self, name: str = "") -> None:
        """Make the model (the default for "") loaded and the most recently used. A model
        its settings cannot load (ModelError: fp8 on this card, a LoRA that fits none of its
        layers) raises that, so that the start stops saying why."""
        engine = self._engine(name)
        if engine.name in self._loaded:
            self._loaded.remove(engine.name)
        else:
            self._make_room(engine)
            loaded = self._try_load(engine)
            if not loaded and self._loaded:
                self._unload(self._loaded[0], f"the GPU ran out of memory loading {engine.name}")
                loaded = self._try_load(engine)
            if not loaded:
                raise GenerationError(
                    f"The model {engine.name} could not be loaded: not enough GPU memory."
                )
        self._loaded.append(engine.name)

    def _load_for_jobs(self, name: str) -> None:
        """`load`, where a ModelError fails the jobs (GenerationError), not the worker."""
        try:
            self.load(name)
        except ModelError:
            raise GenerationError(
                f"The model {name} could not be loaded; the bot's log says why."
            ) from None

    def _engine(self, name: str) -> Engine:
        engine = self._engines.get(name or self.name)
        if engine is None:
            raise unknown_model(name, self.models)
        return engine

    def _make_room(self, engine: Engine) -> None:
        # What loading it takes, the working room included (not merely its files' size):
        # short of that, `quantize_offload.fit` would offload it where unloading another would
        # have let it load whole.
        need = engine.memory_need()
        while self._loaded:
            if self.max_loaded is not None and len(self._loaded) >= self.max_loaded:
                reason = f"at most {self.max_loaded} may be loaded, and {engine.name} is next"
            else:
                # Asked anew after each unload: what an unload frees is what counts.
                free = self._free_memory()
                if free is None or free >= need:
                    return
                reason = (
                    f"{engine.name} needs about {need / GIB:.1f} GiB, {free / GIB:.1f} GiB is free"
                )
            self._unload(self._loaded[0], reason)

    def _try_load(self, engine: Engine) -> bool:
        """Load; False when the GPU ran out of memory, the ModelError of settings it cannot
        load with, GenerationError for any other failure (a broken folder must fail its
        jobs, not the worker)."""
        import torch

        error = None
        try:
            engine.load()
            return True
        except torch.cuda.OutOfMemoryError:
            log.warning("the GPU ran out of memory loading model %s", engine.name)
        except ModelError as exc:
            log.error("model %s could not be loaded: %s", engine.name, exc)
            error = ModelError(str(exc))  # without its traceback, which holds the frames
        except Exception:
            log.exception("model %s could not be loaded from %s", engine.name, engine.path)
            error = GenerationError(
                f"The model {engine.name} could not be loaded; the bot's log says why."
            )
        # Out of the except blocks, so that the failed load's frames (and tensors) are gone.
        engine.unload()
        if error is not None:
            raise error
        return False

    def _unload(self, name: str, reason: str) -> None:
        self._engines[name].unload()
        self._loaded.remove(name)
        log.info("unloaded model %s: %s", name, reason)
