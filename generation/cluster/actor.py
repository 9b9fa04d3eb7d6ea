"""One GPU worker as a Ray actor: on its host it loads the models from that host's folders
and warms up exactly as a local worker does (generation.building), then makes the batches
the bot's queue hands it and sends the pictures back encoded (PNG, quick to compress), with
their progress readable while it works.

Runs in Ray's worker processes on the GPU hosts; the bridge makes it a Ray actor.
"""

from __future__ import annotations

import io
import logging
import os
import socket
import time
from dataclasses import replace
from pathlib import Path

from .. import progress
from ..building import Recipe, diffusion_runner, warm_up, with_upscaler
from ..job import GenerationError, Job
from ..workers import is_device_fault
from .spec import versions

log = logging.getLogger(__name__)


class Worker:
    """Made with `ray.remote(...)(Worker).options(...).remote(recipe, slot, threads)`."""

    def __init__(self, recipe: Recipe, slot: int, threads: int | None = None):
        import ray

        self.host = socket.gethostname()
        self.node = ray.get_runtime_context().get_node_id()
        # Two workers on one host differ by their slot; the node ID tells hosts of one name
        # apart (and is what `ray status` and the dashboard show).
        self.name = f"{self.host} #{slot} (node {self.node[:8]})"
        self.slot = slot
        self.error: str | None = None
        self.studio = None
        self._progress: progress.Progress | None = None
        try:
            self._load(recipe, threads)
        except Exception as exc:  # reported by ready(): the bridge names the host and why
            log.exception("the worker on %s could not load its models", self.host)
            self.error = f"the worker on {self.host} could not start: {exc}"

    def _load(self, recipe: Recipe, threads: int | None) -> None:
        for name, folder in recipe.catalogue.items():
            if not Path(folder).is_dir():
                raise FileNotFoundError(f"the model {name}'s folder {folder} is not on this "
                                        "host (every GPU host needs it at the same path)")
        if recipe.upscaler is not None and not Path(recipe.upscaler).is_file():
            raise FileNotFoundError(f"the upscaler {recipe.upscaler} is not on this host")
        if threads:
            import torch

            torch.set_num_threads(threads)
        # The compile cache belongs to this host, not to the bot's state_dir path.
        cache = Path(os.environ.get("IMGBOT_CACHE_DIR", "~/.cache/imgbot")).expanduser()
        recipe = replace(recipe, engine_options={**recipe.engine_options,
                                                 "cache_dir": cache / "compile-cache"})
        runner = diffusion_runner(recipe)
        runner.load()
        warm_up(runner, recipe)
        self.studio = with_upscaler(runner, recipe)

    def ready(self) -> dict:
        """Who this worker is and what it runs; "error" when it could not load."""
        info = {"worker": self.name, "host": self.host, "node": self.node, "slot": self.slot,
                "versions": versions(), "auth": os.environ.get("RAY_AUTH_MODE", "disabled")}
        if self.error is not None:
            info["error"] = self.error
        else:
            info["device"] = str(getattr(getattr(self.studio, "placement", None), "device", "?"))
            info["models"] = list(self.studio.models)
        return info

    def ping(self) -> bool:
        return True

    def progress(self) -> progress.Progress | None:
        return self._progress

    def run(self, jobs: list[Job]) -> dict:
        """Make a batch (one job, or several of one batch key): its pictures per job as PNG
        bytes, or {"error": words a user may read}. A device fault ends this process: the
        bridge sees the actor die, and the bot gives the batch to another worker."""
        self._progress = None
        started = time.monotonic()
        try:
            with progress.reporting(self._told):
                if len(jobs) == 1:
                    made = [self.studio.generate(jobs[0])]
                else:
                    made = self.studio.generate_batch(jobs)
        except GenerationError as exc:
            return {"error": str(exc)}
        except Exception as exc:
            if is_device_fault(exc):
                log.critical("a device fault on %s: %s; this worker ends", self.host, exc)
                os._exit(1)
            log.exception("a batch failed on %s", self.host)
            return {"error": f"generation failed: {type(exc).__name__}: {exc}"}
        return {"images": [[_png(image) for image in images] for images in made],
                "worker": self.name, "seconds": time.monotonic() - started}

    def _told(self, value: progress.Progress) -> None:
        self._progress = value


def _png(image) -> bytes:
    """Lossless and uncompressed (level 0 costs no deflate on a busy host): the bot encodes
    the picture again with its parameters, marks and signature, so this only carries the
    pixels, over the cluster's own network."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()
