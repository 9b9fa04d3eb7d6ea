"""The `generation:` section: the models, devices and defaults of a picture."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from bot.config.base import READ_SECRETS, parse_size, _Section
from bot.config.cluster import TOKEN_KEY, RaySettings


class GenerationSettings(_Section):
    model: Path | None = Field(
        None,
        description=(
            "The default model: a local diffusers folder (with model_index.json), never a hub "
            "name; imgbot downloads nothing. Families: SD 1.x/2.x, SDXL, FLUX.1, FLUX.2 [klein], "
            "Z-Image, Qwen-Image, and other text-to-image pipelines diffusers' AutoPipeline "
            "knows. null: no model (`imgbot demo` then makes a random-weight test model)."
        ),
    )
    device: str = Field(
        "auto",
        description=(
            "auto picks cuda (half precision), then mps, then cpu (float32); or cuda, cuda:N, "
            "mps, cpu."
        ),
    )
    steps: int = Field(
        4,
        ge=1,
        description=(
            "Default denoising steps for every model. Left out, each model gets its family's "
            "own (4 for SD/SDXL Turbo and FLUX.2 [klein], 8 for Z-Image-Turbo, 50 for "
            "Qwen-Image, ...)."
        ),
    )
    guidance: float = Field(
        0.0,
        ge=0.0,
        le=30.0,
        description=(
            "Default classifier-free guidance for every model. Left out, each model gets its "
            "family's own. A negative prompt works only above 1."
        ),
    )
    size: str = Field(
        "1024x1024", description=("Default picture size, WIDTHxHEIGHT, multiples of 8.")
    )
    warm_up: bool = Field(
        True,
        description=(
            "Run one throw-away generation at start, so that the first person does not wait for it."
        ),
    )
    models: dict[str, Path] = Field(
        {},
        description=(
            "More models, each under a short name (letters, digits, - _ .) that people choose "
            "with --model NAME; `model` stays the default. Each loads on its first job."
        ),
    )
    loras: dict[str, Path] = Field(
        {},
        description=(
            "LoRA files (.safetensors) by name, for styles that name one; loaded onto the "
            "default model at start (one made for another family stops the start)."
        ),
    )
    edit_model: str | None = Field(
        None,
        description=(
            "The model `!img edit` runs: a name from models (or the default model's) whose "
            "family edits by instruction (FLUX.2 [klein], Qwen-Image-Edit). null: the default "
            "model when it is a FLUX.2 [klein], else no editing."
        ),
    )
    max_loaded_models: int | None = Field(
        None,
        ge=1,
        description=(
            "How many models may be loaded at once; null: as many as fit in memory (the least "
            "recently used is unloaded first)."
        ),
    )
    upscaler: Path | None = Field(
        None,
        description=(
            "An AI upscaler file spandrel loads (a Real-ESRGAN x4 .pth or .safetensors) for "
            "`!img upscale`; null: a Lanczos resize, and the reply says so."
        ),
    )
    vae: Path | None = Field(
        None,
        description=(
            "A VAE folder that is safe in half precision (for SDXL: "
            "madebyollin/sdxl-vae-fp16-fix), used in place of the model's own; null: the "
            "model's (SDXL's then decodes in float32)."
        ),
    )
    compile: bool = Field(
        False,
        description=(
            "torch.compile the denoiser and the VAE decoder on CUDA: faster pictures after a "
            "slow first start; the kernels are cached in state_dir/compile-cache."
        ),
    )
    fast_decoder: Path | None = Field(
        None,
        description=(
            "A tiny decoder folder (TAESD, TAESDXL: an AutoencoderTiny) for pictures asked for "
            "with --fast; null: no --fast."
        ),
    )
    max_batch: int = Field(
        8,
        ge=1,
        le=64,
        description=(
            "Jobs of the same shape that wait together are made as one batch of up to this "
            "many pictures; 1 turns batching off. A job that waits alone is never held back."
        ),
    )
    devices: list[str] | None = Field(
        None,
        description=(
            "Several GPUs on one server: one worker per device, each with its own copy of the "
            'models, all taking jobs from one queue, e.g. ["cuda:0", "cuda:1"]. null: '
            "`device`. Not with backend ray."
        ),
    )
    quantize: Literal["none", "int8", "fp8"] = Field(
        "none",
        description=(
            "The denoiser's weights in 8 bits through torchao (the `quantize` extra), about half "
            "its memory. int8 runs on any GPU and the CPU; fp8 needs compute capability 8.9 or "
            "newer (L4, L40S, RTX 4090, H100)."
        ),
    )
    offload: Literal["auto", "none", "model", "group"] = Field(
        "auto",
        description=(
            "Keep the weights in the CPU's memory and bring them to the GPU as they run. auto: "
            "only on CUDA and only for a model that does not fit the card; model: one part on "
            "the card at a time; group: layer by layer (least memory, slowest); none: never."
        ),
    )
    backend: Literal["local", "ray"] = Field(
        "local",
        description=(
            "Where the GPU workers run. local: threads in this process, one per device. ray: "
            "one Ray actor per GPU worker on the company's Ray cluster (the `cluster` extra), "
            "as generation.ray says."
        ),
    )
    ray: RaySettings = Field(
        RaySettings(), description=("The Ray cluster of backend ray; only read with backend: ray.")
    )

    # Before the Literal's own check, so that a wrong value gets these words.
    @field_validator("backend", mode="before")
    @classmethod
    def _backend(cls, value: Any) -> Any:
        if value not in ("local", "ray"):
            raise ValueError(
                f"{value!r}: choose local (workers in this process, one per "
                "device) or ray (GPU workers on a Ray cluster: pip install "
                "'imgbot[cluster]', README \"More than one GPU server\")"
            )
        return value

    @model_validator(mode="after")
    def _ray_backend(self) -> GenerationSettings:
        if self.backend != "ray":
            return self  # generation.ray is then not used: its token is not read
        if self.devices is not None:
            raise ValueError(
                "devices is for the local backend; with backend ray each worker "
                "gets its device from Ray (generation.ray.resources): leave "
                "devices out"
            )
        if (
            self.ray.token_file is None
            and not self.ray.allow_unauthenticated
            and self.ray.bridge_socket is None
        ):
            # Ray runs whatever code a client sends it: an open cluster is open to anyone
            # who reaches its port, so going without the token is a choice made in writing.
            # A bridge of its own user (bridge_socket) has its unit's token; the cluster's
            # token authentication is checked when it connects, in both modes.
            raise ValueError(
                f"backend ray needs {TOKEN_KEY}: the cluster's token (what "
                "`ray get-auth-token` prints on a node), e.g. "
                '"${CREDENTIALS_DIRECTORY}/ray-token"; or, knowingly, '
                "generation.ray.allow_unauthenticated: true for a cluster "
                "without token authentication"
            )
        if READ_SECRETS.get():
            self.ray.load_token()
        return self

    @field_validator("quantize", mode="before")
    @classmethod
    def _quantize(cls, value: Any) -> Any:
        if value not in ("none", "int8", "fp8"):
            raise ValueError(
                f"{value!r}: choose none, int8 (any GPU, or the CPU) or fp8 (a GPU "
                "of compute capability 8.9 or newer: L4, L40S, RTX 4090, H100)"
            )
        return value

    @field_validator("offload", mode="before")
    @classmethod
    def _offload(cls, value: Any) -> Any:
        if value not in ("auto", "none", "model", "group"):
            raise ValueError(
                f"{value!r}: choose auto (offload only a model larger than the "
                "card's free memory), none, model or group"
            )
        return value

    @model_validator(mode="after")
    def _fp8_on_a_gpu(self) -> GenerationSettings:
        others = [d for d in (self.devices or [self.device]) if d in ("cpu", "mps")]
        if self.quantize == "fp8" and others:
            raise ValueError(
                "quantize fp8 needs a CUDA GPU of compute capability 8.9 or newer, "
                f"and the device is {others[0]}; use int8 there"
            )
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
                raise ValueError(
                    f"{name!r} is not a model name: up to 64 letters, digits, "
                    "'-', '_' or '.', starting with a letter or digit, "
                    "e.g. sdxl-turbo"
                )
        return value

    @model_validator(mode="after")
    def _default_model_name(self) -> GenerationSettings:
        if self.models and self.model is None:
            raise ValueError("models is set but model, the default model, is not")
        if self.model is not None:
            name = self._default_name(self.model)
            if name in self.models and not self._same_folder(self.models[name], self.model):
                raise ValueError(
                    f"the default model {self.model} is called {name} (its folder's name), "
                    f"but models.{name} is {self.models[name]}; rename one of them, or list "
                    f"{self.model} in models under a name of its own"
                )
        return self

    @model_validator(mode="after")
    def _edit_model_is_listed(self) -> GenerationSettings:
        if self.edit_model is not None and self.edit_model not in self.catalogue:
            raise ValueError(
                f"edit_model {self.edit_model!r} is not a configured model; "
                f"choose one of {', '.join(self.catalogue) or 'none (set model)'}"
            )
        return self

    def _default_name(self, model: Path) -> str:
        """The default model's name: its key in `models` if listed there, else its folder's."""
        for name, folder in self.models.items():
            if self._same_folder(folder, model):
                return name
        return model.expanduser().resolve().name

    @staticmethod
    def _same_folder(a: Path, b: Path) -> bool:
        return a.expanduser().resolve() == b.expanduser().resolve()

    @property
    def catalogue(self) -> dict[str, Path]:
        """Every configured model folder by name, the default first; {} without `model`."""
        if self.model is None:
            return {}
        default = self._default_name(self.model)
        return {default: self.model, **{n: f for n, f in self.models.items() if n != default}}

    @property
    def catalogue_keys(self) -> dict[str, tuple[str, Path]]:
        """The catalogue with the config key each folder comes from, for messages."""
        return {
            name: (
                f"generation.models.{name}" if name in self.models else "generation.model",
                folder,
            )
            for name, folder in self.catalogue.items()
        }

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

        return Recipe(
            catalogue=self.catalogue,
            pool=bool(self.models),
            device=device or self.device,
            max_loaded_models=self.max_loaded_models,
            engine_options=self.engine_options(state_dir),
            warm_up=self.warm_up,
            size=self.width_height,
            guidance=self.guidance,
            max_batch=self.max_batch,
            upscaler=self.upscaler,
        )

    def engine_options(self, state_dir: Path) -> dict:
        """What each model's engine is built with (generation.models.engine.Engine says what they
        do), by the bot and by `imgbot generate` alike: a picture from the shell is made as
        one from chat."""
        return dict(
            vae=self.vae,
            fast_decoder=self.fast_decoder,
            compile=self.compile,
            cache_dir=state_dir / "compile-cache",
            loras=self.loras,
            quantize=self.quantize,
            offload=self.offload,
        )
