"""What makes a loaded pipeline fast on a GPU, applied once after loading: the attention
kernel, memory layout, fused projections, the VAE's precision, torch.compile, and the
optional VAE and tiny decoder folders.

Each step says what it did (or why it did not) in a short note; the engine logs the notes
of one model together, in one line. Precision falling back to float32 is a WARNING of its
own: it costs time on every picture, and the operator can fix it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ..errors import ImgbotError
from .device import Placement

log = logging.getLogger(__name__)

# "max-autotune-no-cudagraphs": Triton kernels autotuned for the UNet's convolutions and
# matrix products, without CUDA graphs. CUDA graphs ("reduce-overhead") would only save
# kernel launches, a few per cent at 512-1024 px where each launch has a lot to do, and
# would cost: a private memory pool kept per captured shape (sizes × batch sizes, never
# handed back when the pool unloads a model), graphs recorded per thread (warm-up runs in
# another thread than the worker) and outputs overwritten by the next replay. The slow
# part of autotuning is paid once: its results live in the compile cache.
COMPILE_MODE = "max-autotune-no-cudagraphs"
# Tests swap in "eager" (tracing only): inductor's C++ build takes minutes on a small CPU.
COMPILE_BACKEND = "inductor"
# Graphs kept per compiled function before dynamo runs it uncompiled (its default is 8).
# One block's forward serves blocks of several kinds (Z-Image's caption refiner has no
# timestep input, its other blocks do), each LoRA adapter (on, off, which one) and each
# size before it turns dynamic: a tiny Z-Image with two LoRAs passes 8 by its fourth job.
RECOMPILE_LIMIT = 64


class FolderError(ImgbotError):
    """A VAE or tiny decoder folder cannot be used; the message says why."""


def autoencoder_config(folder: str | Path, class_name: str, what: str) -> dict:
    """The config of a local diffusers autoencoder folder holding a `class_name`."""
    path = Path(folder).expanduser()
    config = path / "config.json"
    if not config.is_file():
        raise FolderError(
            f"the {what} folder {path} has no config.json: not a diffusers {class_name} folder"
        )
    try:
        data = json.loads(config.read_text())
        found = data["_class_name"]
    except (ValueError, KeyError, TypeError) as exc:
        raise FolderError(f"{config} is not a valid model config: {exc}") from exc
    if found != class_name:
        raise FolderError(f"the {what} folder {path} holds {found} weights, not {class_name}")
    return data


def load_vae(folder: Path, model: Path, placement: Placement):
    """The AutoencoderKL in `folder` (local only), or None with a WARNING when it was made
    for another family than the model's (an SDXL VAE beside an SD 1.5 model, any VAE
    beside FLUX.2 or Qwen-Image, whose VAEs are of other classes): its pictures would come
    out wrong, or not at all."""
    from diffusers import AutoencoderKL

    config = autoencoder_config(folder, "AutoencoderKL", "VAE")
    try:
        own = json.loads((model / "vae" / "config.json").read_text())
    except (OSError, ValueError):
        own = None  # nothing to compare with; trust the operator
    why = _unlike(config, own) if isinstance(own, dict) else None
    if why is not None:
        log.warning(
            "generation.vae %s is not for %s (%s): %s keeps its own VAE",
            folder,
            model.name,
            why,
            model.name,
        )
        return None
    return AutoencoderKL.from_pretrained(folder, dtype=placement.dtype, local_files_only=True)


def _unlike(theirs: dict, own: dict) -> str | None:
    """How a configured VAE differs from the model's own in what its latents mean."""
    if own.get("_class_name") != "AutoencoderKL":
        return f"the model's VAE is an {own.get('_class_name')}, not an AutoencoderKL"
    for key, default in (("latent_channels", 4), ("scaling_factor", 0.18215)):
        # AutoencoderKL's defaults, for configs that leave them out
        if theirs.get(key, default) != own.get(key, default):
            name = "latent scale" if key == "scaling_factor" else "latent channels"
            return f"{name} {theirs.get(key, default)}, the model's VAE has {own.get(key, default)}"
    return None


def load_tiny_decoder(folder: Path, placement: Placement):
    """The AutoencoderTiny (TAESD, TAESDXL) in `folder`, on the device, ready to decode."""
    import torch
    from diffusers import AutoencoderTiny

    autoencoder_config(folder, "AutoencoderTiny", "fast decoder")
    tiny = AutoencoderTiny.from_pretrained(folder, dtype=placement.dtype, local_files_only=True)
    tiny.to(placement.device)
    if placement.device.startswith("cuda"):
        tiny.to(memory_format=torch.channels_last)
    tiny.eval()
    return tiny


def optimize(pipe, placement: Placement, denoiser: str = "unet", unfused: str = "") -> list[str]:
    """Attention, memory layout and fused projections; a note on each. `denoiser` is the
    pipeline's attribute holding the UNet or the transformer (families/known.py); `unfused` says
    why the q, k, v layers must stay apart ("": they may be fused): LoRA adapters wrap them
    (a fused layer would bypass them), or quantize_offload.py quantized or offloaded them."""

    notes = []
    # 1. The attention kernel.
    custom = False
    if denoiser == "unet":
        note, custom = _unet_attention(pipe)
        notes.append(note)
    else:
        # Transformer models call attention through diffusers' dispatcher, whose default
        # backend is PyTorch's scaled_dot_product_attention (flash / memory-efficient
        # kernels on CUDA); the VAE's attention is set to SDPA as for a UNet model.
        _vae_attention(pipe)
        notes.append("attention: SDPA (diffusers' native backend)")
    # 2. channels_last: the layout cuDNN's and Triton's fastest convolutions want (a
    # transformer has no convolutions: only the VAE).
    convolutional = [pipe.vae] + ([pipe.unet] if denoiser == "unet" else [])
    if placement.device.startswith("cuda"):
        kept = sum(_channels_last(module) for module in convolutional)
        notes.append(
            "channels_last: on" + (f" (2-D convolutions; {kept} 3-D weights kept)" if kept else "")
        )
    else:
        notes.append(f"channels_last: off (for CUDA; this is {placement.device})")
    # 3. One matrix product for q, k and v instead of three (UNet pipelines only: the new
    # transformer pipelines have no fuse_qkv_projections).
    if denoiser != "unet":
        notes.append(f"fused QKV: off ({type(pipe).__name__} cannot)")
    elif unfused:
        notes.append(f"fused QKV: off ({unfused})")
    elif custom:
        notes.append("fused QKV: off (custom attention)")
    else:
        notes.append(_fuse_qkv(pipe))
    return notes


def _channels_last(module) -> int:
    """The 4-D weights and buffers of `module` (2-D convolutions) in channels_last, in place;
    returns how many 5-D ones it left as they were.

    Not `module.to(memory_format=torch.channels_last)`: that raises "required rank 4 tensor"
    on the first 5-D weight, and the VAEs of Qwen-Image and Qwen-Image-Edit
    (AutoencoderKLQwenImage, a video VAE) are made of 3-D convolutions. Their inputs stay
    contiguous, so their weights do too: weights in channels_last_3d would only make
    cuDNN convert every input."""
    import torch

    kept = 0
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.dim() == 4:
            tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
        kept += tensor.dim() == 5
    return kept


def _plain_processors():
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    return AttnProcessor, AttnProcessor2_0


def _unet_attention(pipe) -> tuple[str, bool]:
    """PyTorch's scaled_dot_product_attention (flash / memory-efficient kernels), set
    explicitly rather than trusting the default; a model with other processors (added KV
    projections, IP adapters) keeps its own. Returns the note, and whether it kept its own."""
    plain = _plain_processors()
    parts = [m for m in (pipe.unet, pipe.vae) if hasattr(m, "set_attn_processor")]
    others = {
        type(p).__name__
        for m in parts
        for p in m.attn_processors.values()
        if not isinstance(p, plain)
    }
    if others:
        return f"attention: the model's own ({', '.join(sorted(others))})", True
    for module in parts:
        module.set_attn_processor(plain[1]())
    return "attention: SDPA", False


def _vae_attention(pipe) -> None:
    vae, plain = pipe.vae, _plain_processors()
    if hasattr(vae, "set_attn_processor") and all(
        isinstance(p, plain) for p in vae.attn_processors.values()
    ):
        vae.set_attn_processor(plain[1]())


def _fuse_qkv(pipe) -> str:
    if not hasattr(pipe, "fuse_qkv_projections"):
        return f"fused QKV: off ({type(pipe).__name__} cannot)"
    try:
        pipe.fuse_qkv_projections()
    except ValueError as exc:  # what diffusers raises for models it cannot fuse
        return f"fused QKV: off ({exc})"
    # The fused layers are copies: point the separate q, k, v weights into them, so that
    # fusing does not hold the projections twice (1.2 GiB for SDXL's UNet in bf16) and
    # `unfuse_qkv_projections` still finds them.
    shared = sum(_share_fused(m) for part in (pipe.unet, pipe.vae) for m in part.modules())
    return f"fused QKV: on ({shared} attention layers)"


def _share_fused(module) -> int:
    fused = getattr(module, "to_qkv", None), getattr(module, "to_kv", None)
    if not getattr(module, "fused_projections", False) or fused == (None, None):
        return 0
    whole, parts = (
        (fused[0], ("to_q", "to_k", "to_v"))
        if fused[0] is not None
        else (fused[1], ("to_k", "to_v"))
    )
    start = 0
    for name in parts:
        linear = getattr(module, name)
        rows = linear.weight.shape[0]
        linear.weight.data = whole.weight.data[start : start + rows]
        if linear.bias is not None and whole.bias is not None:
            linear.bias.data = whole.bias.data[start : start + rows]
        start += rows
    return 1


def vae_precision(pipe, name: str, family: str, placement: Placement, configured: bool) -> str:
    """The note on the precision the VAE decodes in, with a WARNING where it is float32 on a
    half-precision GPU.

    SDXL's own VAE overflows in float16, so its config says `force_upcast` and diffusers
    moves it to float32 for every decode (and every img2img encode). bfloat16 has float32's
    range: there the upcast only costs time, and it is turned off."""
    import torch

    vae = pipe.vae
    if not getattr(vae.config, "force_upcast", False) or placement.dtype == torch.float32:
        return f"VAE: {placement.dtype_name}"
    if placement.dtype == torch.bfloat16:
        vae.register_to_config(force_upcast=False)
        return "VAE: bfloat16 (its float16 upcast is not needed in bfloat16)"
    if family != "sdxl":
        return f"VAE: {placement.dtype_name}"  # SD 1.x pipelines never upcast
    whose = "the configured VAE" if configured else "the model's VAE"
    log.warning(
        "%s of %s decodes in float32 (its config asks for it: SDXL's VAE overflows "
        "in float16), slower and with its weights copied to float32 and back for "
        "every picture; set generation.vae to an fp16-safe VAE folder (such as "
        "madebyollin/sdxl-vae-fp16-fix) to decode in float16",
        whose,
        name,
    )
    return "VAE: float32 (force_upcast)"


def use_compile_cache(cache_dir: Path) -> None:
    """Keep torch.compile's results (inductor's FX graphs, generated kernels, autotuning)
    in `cache_dir`, so that a restart reuses them instead of compiling for minutes.

    Process-wide, as torch reads these from the environment: every compile in this process
    uses the one cache (and the default one in /tmp would not survive a restart under
    systemd's PrivateTmp)."""
    import torch._inductor.config

    cache_dir = Path(cache_dir).expanduser().resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    earlier = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if earlier and Path(earlier) != cache_dir:
        log.warning(
            "the torch.compile cache moves from %s to %s for the rest of the process",
            earlier,
            cache_dir,
        )
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir)
    os.environ["TORCHINDUCTOR_FX_GRAPH_CACHE"] = "1"
    torch._inductor.config.fx_graph_cache = True  # read from the environment at import


def compile_models(
    pipe, placement: Placement, denoiser: str = "unet", offload: str = "none"
) -> str:
    """torch.compile the denoiser (UNet or transformer) and the VAE's decoder in place (the
    pipeline, and the img2img pipeline sharing its modules, call them as before). Nothing
    compiles here: each new shape compiles on its first call, which is what
    `Engine.warm_up` is for.

    The denoiser's repeated blocks are compiled, not the whole model (diffusers' regional
    compile, `compile_repeated_blocks`, for every model that declares `_repeated_blocks`:
    the UNets, FLUX.1, FLUX.2, Z-Image, Qwen-Image): one graph serves every block, so it
    compiles in a fraction of the time, and a block takes plain tensors. The whole model
    does not: Z-Image's transformer takes Python lists of per-picture tensors, whose length
    (the batch) and items (each caption's length) dynamo specialises on, so each batch size
    and caption length would be a graph of its own; around the blocks, it runs as it is.

    Shapes are left to dynamo's automatic dynamic shapes: in a block's tensors, a second
    size or batch makes the dimension that changed dynamic. Other changes still compile
    anew (switching LoRA adapters changes what a block's layers do), so nothing is compiled
    with fullgraph: past dynamo's recompile limit, fullgraph raises
    FailOnRecompileLimitHit and fails the job, where without it that code runs uncompiled.

    Under model offloading (quantize_offload.py) the hook that brings a model onto the GPU runs
    before its forward, outside the compiled blocks. Group offloading is not compiled: its
    hooks around every layer would cut the model into hundreds of small graphs."""
    if offload == "group":
        return "compile: off (group offload breaks the graph at every layer)"
    options = {"backend": COMPILE_BACKEND}
    on_gpu = placement.device.startswith("cuda")
    if COMPILE_BACKEND == "inductor" and on_gpu:
        options["mode"] = COMPILE_MODE  # on the CPU, autotuning C++ templates takes ages
    model = getattr(pipe, denoiser)
    what = "UNet" if denoiser == "unet" else "transformer"
    blocks = list(getattr(model, "_repeated_blocks", None) or ())
    _allow_recompiles()
    if blocks:
        model.compile_repeated_blocks(**options)
        what += f" blocks ({', '.join(blocks)})"
    else:
        model.compile(**options)
    # The decoder only: the encoder runs for img2img alone, and the tiny decoder is fast
    # as it is (compiling it would make the first --fast picture wait for the compiler).
    decoder = getattr(pipe.vae, "decoder", None)
    if decoder is not None:
        decoder.compile(**options)
    return (
        f"compile: on ({options.get('mode', 'default')}, {what}"
        + (" and VAE decoder" if decoder is not None else "")
        + (", after the offload hook)" if offload != "none" else ")")
    )


def _allow_recompiles() -> None:
    """Raise dynamo's recompile limit to RECOMPILE_LIMIT (never lower it); process-wide,
    as dynamo reads it, and compiling is the operator's choice for the process."""
    import torch._dynamo

    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, RECOMPILE_LIMIT)
