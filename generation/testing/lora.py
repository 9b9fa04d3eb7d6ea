"""A random-weight LoRA file for a test model, written as a trained one is shipped (one
.safetensors in diffusers' format, loaded by `load_lora_weights`): its low-rank matrices
are random rather than zero, so that it visibly changes pictures."""

from __future__ import annotations

from pathlib import Path


def make_test_lora(model: str | Path, out: str | Path, seed: int = 0, rank: int = 4) -> Path:
    """Write a LoRA for the denoiser (UNet or transformer) of the diffusers folder `model`
    into the file `out` (its folder is made)."""
    import torch
    from diffusers import DiffusionPipeline
    from peft import LoraConfig, get_peft_model_state_dict

    from ..models.engine import quiet_libraries

    quiet_libraries()
    torch.manual_seed(seed)
    pipe = DiffusionPipeline.from_pretrained(model, local_files_only=True)
    denoiser_name = "unet" if getattr(pipe, "unet", None) is not None else "transformer"
    denoiser = getattr(pipe, denoiser_name)
    # Random B as well as A (peft starts B at zero, which would change nothing).
    denoiser.add_adapter(
        LoraConfig(
            r=rank,
            lora_alpha=rank,
            init_lora_weights=False,
            target_modules=["to_q", "to_k", "to_v", "to_out.0"],
        )
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    type(pipe).save_lora_weights(
        out.parent,
        weight_name=out.name,
        safe_serialization=True,
        **{f"{denoiser_name}_lora_layers": get_peft_model_state_dict(denoiser)},
    )
    return out
