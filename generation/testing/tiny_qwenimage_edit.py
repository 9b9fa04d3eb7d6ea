"""A tiny random-weight Qwen-Image-Edit Plus (the 2509/2511 pipeline): the tiny Qwen-Image's
parts, its Qwen2.5-VL vision tower now reading the pictures, and the Qwen2-VL processor
(image processor and tokenizer) the pipeline encodes pictures and prompt with.

The pipeline scales every picture it is given to about 1024² for the VAE and 384² for the
vision tower, whatever the job's size: an edit of the tiny model takes seconds on a CPU, most
of them in the VAE's encoder."""

from __future__ import annotations

from pathlib import Path

from .qwen_parts import qwen_tokenizer
from .tiny_qwenimage import components

# The system prompt of QwenImageEditPlusPipeline's `prompt_template_encode`, whose 64 tokens
# it drops from the encoder's output; the tokenizer gets merges that make them 64 here too.
# A test holds this copy to the installed pipeline's.
SYSTEM_PROMPT = (
    "<|im_start|>system\nDescribe the key features of the input image (color, shape, size, "
    "texture, objects, background), then explain how the user's text instruction should "
    "alter or modify the image. Generate a new image that meets the user's requirements "
    "while maintaining consistency with the original input where appropriate.<|im_end|>\n"
    "<|im_start|>user\n"
)


def build(workdir: Path):
    from diffusers import QwenImageEditPlusPipeline
    from transformers import Qwen2VLImageProcessor

    from ..families.edit_only import processor

    # "Picture 1: " comes before each picture's tokens, after the system prompt.
    tokenizer = qwen_tokenizer(workdir / "tokenizer", words=SYSTEM_PROMPT + "Picture assistant")
    # The real processor's: 14-pixel patches merged 2×2 (the vision tower's defaults), at
    # most 12,845,056 pixels a picture.
    pictures = Qwen2VLImageProcessor(size={"shortest_edge": 3136, "longest_edge": 12845056})
    # 2511's denoiser: the pictures' tokens get timestep 0 (`zero_cond_t`), the noise's the
    # step's; 2509 has it off.
    pipe = QwenImageEditPlusPipeline(
        tokenizer=tokenizer,
        processor=processor(pictures, tokenizer),
        **components(tokenizer, zero_cond_t=True),
    )
    # As a downloaded folder names it: the processor above only leaves out the video part.
    pipe.register_to_config(processor=("transformers", "Qwen2VLProcessor"))
    return pipe
