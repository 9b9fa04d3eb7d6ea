"""The `generation:` section: the models, devices and defaults of a picture."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from bot.config.base import READ_SECRETS, parse_size, _Section
from bot.config.cluster import TOKEN_KEY, RaySettings


class GenerationSettings(_Section):
    model: Path | None = None
    device: str = "auto"
    steps: int = Field(4, ge=1)
    guidance: float = Field(0.0, ge=0.0, le=30.0)
    size: str = "1024x1024"
    warm_up: bool = True
    models: dict[str, Path] = {}  # more models by name; `model` is the default
    # LoRA files (.safetensors) by name, for styles that name one; loaded onto the default
    # model at start (a LoRA made for another family stops the start).
    loras: dict[str, Path] = {}
    # The model `!img edit` runs (a name from `models`, or the default's); None: the default
    # model when its family edits by instruction (FLUX.2 [klein]), else no editing.
    edit_model: str | None = None
    max_loaded_models: int | None = Field(None, ge=1)  # None: as many as memory holds
    # An AI upscaler file spandrel can load (Real-ESRGAN ×4 .pth/.safetensors, …); None:
    # `!img upscale` uses a Lanczos resize and says so.
    upscaler: Path | None = None
    # A VAE folder that is safe in half precision (e.g. madebyollin/sdxl-vae-fp16-fix), used
    # in place of the model's own; None: the model's VAE (SDXL's upcasts to fp32 to decode).
    vae: Path | None = None
    # torch.compile the UNet and the VAE decoder (CUDA), with a compile cache in state_dir.
    compile: bool = False
    # A tiny decoder folder (TAESD / TAESDXL, AutoencoderTiny) for `--fast` pictures.
    fast_decoder: Path | None = None
    # Jobs of the same shape waiting together are made as one batch of up to this many
    # pictures; 1 turns batching off.
    max_batch: int = Field(8, ge=1, le=64)
    # Several GPUs: one worker (with its own copy of the models) per device, all taking
    # jobs from one queue; None: the one `device`.
    devices: list[str] | None = None
    # Models larger than the card (README "Big models"): the denoiser's weights in 8 bits
    # through torchao (the `quantize` extra), and diffusers' offloading to the CPU's memory.
    quantize: str = "none"
    offload: str = "auto"
    # Where the GPU workers run: local, threads in this process (one per device); ray,
    # actors on a Ray cluster (the `cluster` extra), as `ray:` says.
    backend: str = "local"
    ray: RaySettings = RaySettings()

    @field_validator("backend")
    @classmethod
    def _backend(cls, value: str) -> str:
        if value not in ("local", "ray"):
            raise ValueError(f"{value!r}: choose local (workers in this process, one per "
                             "device) or ray (GPU workers on a Ray cluster: pip install "
                             "'imgbot[cluster]', README \"More than one GPU server\")")
        return value

    @model_validator(mode="after")
    def _ray_backend(self) -> GenerationSettings:
        if self.backend != "ray":
            return self  # generation.ray is then not used: its token is not read
        if self.devices is not None:
            raise ValueError("devices is for the local backend; with backend ray each worker "
                             "gets its device from Ray (generation.ray.resources): leave "
                             "devices out")
        if (self.ray.token_file is None and not self.ray.allow_unauthenticated
                and self.ray.bridge_socket is None):
            # Ray runs whatever code a client sends it: an open cluster is open to anyone
            # who reaches its port, so going without the token is a choice made in writing.
            # A bridge of its own user (bridge_socket) has its unit's token; the cluster's
            # token authentication is checked when it connects, in both modes.
            raise ValueError(f"backend ray needs {TOKEN_KEY}: the cluster's token (what "
                             "`ray get-auth-token` prints on a node), e.g. "
                             "\"${CREDENTIALS_DIRECTORY}/ray-token\"; or, knowingly, "
                             "generation.ray.allow_unauthenticated: true for a cluster "
                             "without token authentication")
        if READ_SECRETS.get():
            self.ray.load_token()
        return self

    @field_validator("quantize")
    @classmethod
    def _quantize(cls, value: str) -> str:
        if value not in ("none", "int8", "fp8"):
            raise ValueError(f"{value!r}: choose none, int8 (any GPU, or the CPU) or fp8 (a GPU "
                             "of compute capability 8.9 or newer: L4, L40S, RTX 4090, H100)")
        return value

    @field_validator("offload")
    @classmethod
    def _offload(cls, value: str) -> str:
        if value not in ("auto", "none", "model", "group"):
            raise ValueError(f"{value!r}: choose auto (offload only a model larger than the "
                             "card's free memory), none, model or group")
        return value

    @model_validator(mode="after")
    def _fp8_on_a_gpu(self) -> GenerationSettings:
        others = [d for d in (self.devices or [self.device]) if d in ("cpu", "mps")]
        if self.quantize == "fp8" and others:
            raise ValueError("quantize fp8 needs a CUDA GPU of compute capability 8.9 or newer, "
                             f"and the device is {others[0]}; use int8 there")
        return self

    @field_validator("devices")
    @classmethod
    def _devices(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("list at least one device, or leave devices out")
        for device in value:
            if not re.match(r"^(cpu|mps|cuda(:\d+)?)$", device):
                raise ValueError(f"{device!r}: each device is cuda:N, cuda, mps or cpu")
        if len(set(value)) != len(value):
            raise ValueError("a device is listed twice")
        return value

    @field_validator("models", "loras")
    @classmethod
    def _model_names(cls, value: dict[str, Path]) -> dict[str, Path]:
        for name in value:
            # People type these after --model; one starting with "-" would read as an option.
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
                raise ValueError(f"{name!r} is not a model name: up to 64 letters, digits, "
                                 "'-', '_' or '.', starting with a letter or digit, "
                                 "e.g. sdxl-turbo")
        return value

    @model_validator(mode="after")
    def _default_model_name(self) -> GenerationSettings:
        if self.models and self.model is None:
            raise ValueError("models is set but model, the default model, is not")
        if self.model is not None:
            name = self._default_name()
            if name in self.models and not self._same_folder(self.models[name], self.model):
                raise ValueError(
                    f"the default model {self.model} is called {name} (its folder's name), "
                    f"but models.{name} is {self.models[name]}; rename one of them, or list "
                    f"{self.model} in models under a name of its own")
        return self

    @model_validator(mode="after")
    def _edit_model_is_listed(self) -> GenerationSettings:
        if self.edit_model is not None and self.edit_model not in self.catalogue:
            raise ValueError(f"edit_model {self.edit_model!r} is not a configured model; "
                             f"choose one of {', '.join(self.catalogue) or 'none (set model)'}")
        return self

    def _default_name(self) -> str:
        """The default model's name: its key in `models` if listed there, else its folder's."""
        for name, folder in self.models.items():
            if self._same_folder(folder, self.model):
                return name
        return self.model.expanduser().resolve().name

    @staticmethod
    def _same_folder(a: Path, b: Path) -> bool:
        return a.expanduser().resolve() == b.expanduser().resolve()

    @property
    def catalogue(self) -> dict[str, Path]:
        """Every configured model folder by name, the default first; {} without `model`."""
        if self.model is None:
            return {}
        default = self._default_name()
        return {default: self.model, **{n: f for n, f in self.models.items() if n != default}}

    @property
    def catalogue_keys(self) -> dict[str, tuple[str, Path]]:
        """The catalogue with the config key each folder comes from, for messages."""
        return {name: (f"generation.models.{name}" if name in self.models
                       else "generation.model", folder)
                for name, folder in self.catalogue.items()}

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.match(r"^(auto|cpu|mps|cuda(:\d+)?)$", value):
            raise ValueError(f"{value!r}: choose auto, cuda, cuda:N, mps or cpu")
        return value

    @field_validator("size")
    @classmethod
    def _size(cls, value: str) -> str:
        width, height = parse_size(value)
        return f"{width}x{height}"

    @property
    def width_height(self) -> tuple[int, int]:
        return parse_size(self.size)

    def recipe(self, state_dir: Path, device: str | None = None):
        """What a worker loads (generation.models.recipe.Recipe), on `device` or the configured
        one: the bot's own workers, and each Ray actor on its host."""
        from generation.models.recipe import Recipe

        return Recipe(catalogue=self.catalogue, pool=bool(self.models),
                      device=device or self.device, max_loaded_models=self.max_loaded_models,
                      engine_options=self.engine_options(state_dir), warm_up=self.warm_up,
                      size=self.width_height, guidance=self.guidance,
                      max_batch=self.max_batch, upscaler=self.upscaler)

    def engine_options(self, state_dir: Path) -> dict:
        """What each model's engine is built with (generation.models.engine.Engine says what they
        do), by the bot and by `imgbot generate` alike: a picture from the shell is made as
        one from chat."""
        return dict(vae=self.vae, fast_decoder=self.fast_decoder, compile=self.compile,
                    cache_dir=state_dir / "compile-cache", loras=self.loras,
                    quantize=self.quantize, offload=self.offload)
