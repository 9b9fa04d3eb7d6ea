"""Everything the start loads from disk, checked before the login and the weights: each
model folder, the VAE, the fast decoder and the upscaler. `imgbot run` stops at the first
problem and `imgbot check` prints one line per part, from this one list, so that the two
never disagree about a config (a check that passes a config the start refuses is worse
than no check).

Only configs and headers are read, except for the upscaler: spandrel has no cheaper way
to say whether it can load a file than loading it (tens of MB, on the CPU)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..families.model_folder import ModelError, family_of
from ..runtime.speedups import FolderError, autoencoder_config


@dataclass(frozen=True)
class Part:
    """One thing the start loads: the config key it comes from, its name in `check`'s
    output, and what was found (`problem` None) or what is wrong with it."""

    key: str
    name: str
    detail: str
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def message(self) -> str:
        """The problem as the start reports it: the key first, then what to fix."""
        return f"{self.key}: {self.problem}"


def check_parts(
    catalogue: dict[str, tuple[str, Path]],
    *,
    vae: Path | None = None,
    fast_decoder: Path | None = None,
    upscaler: Path | None = None,
    edit_model: str | None = None,
    loras: dict[str, Path] | None = None,
    quantize: str = "none",
    devices: Sequence[str] = ("auto",),
) -> list[Part]:
    """`catalogue` maps each model's name to (its config key, its folder), the default
    first; `devices` the ones the models load on (`auto` as the start resolves it). The
    parts that are not configured are left out."""
    parts = [
        _model(name, key, folder, default=index == 0)
        for index, (name, (key, folder)) in enumerate(catalogue.items())
    ]
    parts += _quantized(catalogue, quantize, parts, devices)
    if edit_model is not None and edit_model in catalogue:
        parts.append(_edit_model(edit_model, catalogue[edit_model][1]))
    if loras and parts[0].ok:  # onto the default model, the first
        default, (_, folder) = next(iter(catalogue.items()))
        parts += [
            _lora(name, Path(path).expanduser(), default, folder) for name, path in loras.items()
        ]
    if vae is not None:
        parts.append(_autoencoder("generation.vae", "vae", vae, "AutoencoderKL", "VAE"))
    if fast_decoder is not None:
        parts.append(
            _autoencoder(
                "generation.fast_decoder",
                "fast_decoder",
                fast_decoder,
                "AutoencoderTiny",
                "fast decoder",
            )
        )
    if upscaler is not None:
        parts.append(_upscaler(upscaler))
    return parts


def _model(name: str, key: str, folder: Path, default: bool = False) -> Part:
    try:
        family = family_of(folder)
    except ModelError as exc:
        return Part(key, f"model {name}", str(folder), problem=str(exc))
    if default and not family.text_to_image:  # a bare prompt runs on the default
        return Part(
            "generation.model",
            f"model {name}",
            str(folder),
            problem=(
                f"{folder} is a {family.label} model, which only edits pictures: name it in "
                "generation.models and set generation.edit_model to it"
            ),
        )
    return Part(key, f"model {name}", f"{folder} ({family.label})")


def _quantized(
    catalogue: dict[str, tuple[str, Path]],
    quantize: str,
    models: list[Part],
    devices: Sequence[str],
) -> list[Part]:
    """torchao, where `generation.quantize` or a folder saved quantized with it needs it,
    and a card that runs the quantization (fp8's compute capability)."""
    from ..runtime import quantize_offload

    found = []
    if quantize != "none":
        problem = quantize_offload.torchao_problem(quantize) or next(
            filter(
                None, (quantize_offload.device_problem(quantize, d) for d in dict.fromkeys(devices))
            ),
            None,
        )
        found.append(
            Part(
                "generation.quantize",
                "quantize",
                f"{quantize} (torchao {quantize_offload.torchao_version()}), every denoiser",
                problem=problem,
            )
        )
    for (name, (key, folder)), model in zip(catalogue.items(), models):
        own = model.ok and quantize_offload.folder_quantization(folder, family_of(folder).denoiser)
        if own and own.startswith("torchao") and quantize_offload.torchao_missing():
            found.append(
                Part(
                    key,
                    f"model {name}",
                    str(folder),
                    problem=(
                        f"its denoiser was saved quantized with torchao, which is not installed: "
                        f"{quantize_offload.INSTALL}"
                    ),
                )
            )
    return found


def _edit_model(name: str, folder: Path) -> Part:
    try:
        family = family_of(folder)
    except ModelError as exc:
        return Part("generation.edit_model", "edit model", name, problem=str(exc))
    if not family.edits:
        return Part(
            "generation.edit_model",
            "edit model",
            name,
            problem=(
                f"{name} is a {family.label} model, which cannot edit pictures by instruction "
                "(FLUX.2 [klein] and Qwen-Image-Edit can)"
            ),
        )
    return Part("generation.edit_model", "edit model", f"{name} ({family.label})")


def _lora(name: str, path: Path, model: str, folder: Path) -> Part:
    from .lora import problem

    wrong = problem(path, model, family_of(folder))
    return Part(f"generation.loras.{name}", f"lora {name}", str(path), problem=wrong)


def _autoencoder(key: str, name: str, folder: Path, class_name: str, what: str) -> Part:
    path = Path(folder).expanduser()
    try:
        autoencoder_config(path, class_name, what)
    except FolderError as exc:
        return Part(key, name, str(path), problem=str(exc))
    return Part(key, name, f"{path} ({class_name})")


def _upscaler(path: Path) -> Part:
    from ..postprocess.upscale import Upscaler, UpscalerError

    path = Path(path).expanduser()
    if not path.is_file():
        return Part(
            "generation.upscaler",
            "upscaler",
            str(path),
            problem=f"{path} is not a file (an upscaler model, e.g. a .pth or "
            ".safetensors of Real-ESRGAN)",
        )
    upscaler = Upscaler(path, "cpu")
    try:
        upscaler.load()
    except UpscalerError as exc:
        return Part("generation.upscaler", "upscaler", str(path), problem=str(exc))
    return Part(
        "generation.upscaler",
        "upscaler",
        f"{path} ({upscaler.model.architecture.name}, {upscaler.scale}×)",
    )
