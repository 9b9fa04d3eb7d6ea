"""One GPU worker as a Ray actor: on its host it loads the models from that host's folders
and warms up exactly as a local worker does (generation.models.recipe), then makes the batches
the bot's queue hands it and sends the pictures back encoded (PNG, quick to compress), with
their progress readable while it works.

Runs in Ray's worker processes on the GPU hosts; the bridge makes it a Ray actor. What it
is given (the recipe, the jobs and their pictures) and what it answers are plain builtins
(dict, list, str, bytes, numbers: `messages`), never objects of imgbot's classes, and the
bridge checks every answer before it forwards it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import replace
from pathlib import Path

from ..job import GenerationError
from ..models.recipe import Recipe, diffusion_runner, warm_up, with_upscaler
from ..scheduling import progress
from ..scheduling.workers import is_device_fault
from . import messages
from .spec import versions

log = logging.getLogger(__name__)


class Worker:
    """Made with `ray.remote(...)(Worker).options(...).remote(recipe, slot, threads)`, the
    recipe as `messages.recipe_to_wire` writes it."""

    def __init__(self, recipe: dict, slot: int, threads: int | None = None):
        import ray

        self.host = socket.gethostname()
        self.node = ray.get_runtime_context().get_node_id()
        # Two workers on one host differ by their slot; the node ID tells hosts of one name
        # apart (and is what `ray status` and the dashboard show).
        self.name = f"{self.host} #{slot} (node {self.node[:8]})"
        self.slot = slot
        self.error: str | None = None
        self.runner = None
        self._progress: dict | None = None
        try:
            self._load(messages.recipe_from_wire(recipe), threads)
        except Exception as exc:  # reported by ready(): the bridge names the host and why
            log.exception("the worker on %s could not load its models", self.host)
            self.error = f"the worker on {self.host} could not start: {exc}"

    def _load(self, recipe: Recipe, threads: int | None) -> None:
        for name, folder in recipe.catalogue.items():
            if not Path(folder).is_dir():
                raise FileNotFoundError(
                    f"the model {name}'s folder {folder} is not on this "
                    "host (every GPU host needs it at the same path)"
                )
        if recipe.upscaler is not None and not Path(recipe.upscaler).is_file():
            raise FileNotFoundError(f"the upscaler {recipe.upscaler} is not on this host")
        if threads:
            import torch

            torch.set_num_threads(threads)
        # The compile cache belongs to this host, not to the bot's state_dir path.
        cache = Path(os.environ.get("IMGBOT_CACHE_DIR", "~/.cache/imgbot")).expanduser()
        recipe = replace(
            recipe, engine_options={**recipe.engine_options, "cache_dir": cache / "compile-cache"}
        )
        runner = diffusion_runner(recipe)
        runner.load()
        warm_up(runner, recipe)
        self.runner = with_upscaler(runner, recipe)

    def ready(self) -> dict:
        """Who this worker is and what it runs; "error" when it could not load."""
        info = {
            "worker": self.name,
            "host": self.host,
            "node": self.node,
            "slot": self.slot,
            "versions": versions(),
            "auth": os.environ.get("RAY_AUTH_MODE", "disabled"),
        }
        if self.error is not None:
            info["error"] = self.error
        else:
            placement = self.runner.placement
            info["device"] = "?" if placement is None else str(placement.device)
            info["models"] = list(self.runner.models)
        return info

    def ping(self) -> bool:
        return True

    def progress(self) -> dict | None:
        """The running batch's progress, as `messages.progress_to_wire` writes it."""
        return self._progress

    def run(self, records: list[dict], parts: list[bytes]) -> dict:
        """Make a batch (one job, or several of one batch key; each as
        `messages.job_to_wire` writes it, its pictures in `parts`): its pictures per job as
        PNG bytes, or {"error": words a user may read}. A device fault ends this process:
        the bridge sees the actor die, and the bot gives the batch to another worker."""
        self._progress = None
        started = time.monotonic()
        try:
            jobs = [messages.job_from_wire(record, parts) for record in records]
        except messages.Invalid as exc:
            return {"error": f"the batch could not be read: {exc}"}
        try:
            with progress.reporting(self._told):
                if len(jobs) == 1:
                    made = [self.runner.generate(jobs[0])]
                else:
                    made = self.runner.generate_batch(jobs)
        except GenerationError as exc:
            return {"error": str(exc)}
        except Exception as exc:
            if is_device_fault(exc):
                log.critical("a device fault on %s: %s; this worker ends", self.host, exc)
                os._exit(1)
            log.exception("a batch failed on %s", self.host)
            return {"error": f"generation failed: {type(exc).__name__}: {exc}"}
        return {
            "images": [[messages.png(image, level=0) for image in images] for images in made],
            "worker": self.name,
            "seconds": time.monotonic() - started,
        }

    def _told(self, value: progress.Progress) -> None:
        self._progress = messages.progress_to_wire(value)
