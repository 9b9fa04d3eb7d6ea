"""The Qwen tokenizer the Z-Image, FLUX.2 [klein] and Qwen-Image test models share, generated
here (nothing is downloaded): byte-level BPE in Qwen2's format, with Qwen's special tokens
and the chat template their pipelines format prompts with."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from .parts import _bytes_to_unicode

# What the pipelines and Qwen's chat format use. The real vocabulary puts them after its
# 151,643 ordinary tokens; here they follow the few hundred this one has.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<think>",
    "</think>",
)

# Qwen3's chat template cut to what the pipelines use: plain messages and the generation
# prompt, with its empty thinking block when `enable_thinking` is False (FLUX.2 [klein]
# asks for that; Z-Image leaves thinking on, so its prompts end at "assistant\n").
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}"
)


def qwen_tokenizer(folder: Path, words: str = ""):
    """Write vocab.json and merges.txt into `folder` and load them as a Qwen2Tokenizer.

    Without merges every byte is a token. `words` (text, special tokens allowed) gets merges
    that make each of its words one token, as Qwen's real vocabulary does for common words:
    a pipeline that drops a fixed number of template tokens (Qwen-Image drops its system
    prompt's 34) then drops exactly the template, as with the real tokenizer.
    """
    from transformers import Qwen2Tokenizer

    chars = _bytes_to_unicode()
    # The tokenizer's own pre-tokenizer cuts `words` as it will cut prompts.
    bare = Qwen2Tokenizer(vocab={c: i for i, c in enumerate(chars)}, merges=[])
    split = bare.backend_tokenizer.pre_tokenizer.pre_tokenize_str
    plain = re.split("|".join(map(re.escape, SPECIAL_TOKENS)), words)
    pieces = [piece for text in plain for piece, _ in split(text)]
    merges = _learn_merges(pieces)
    tokens = chars + list(dict.fromkeys(a + b for a, b in merges)) + list(SPECIAL_TOKENS)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {token: i for i, token in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8"
    )
    # <|endoftext|> is Qwen2Tokenizer's default eos, pad and unk; the rest stay whole too.
    return Qwen2Tokenizer.from_pretrained(
        folder, extra_special_tokens=list(SPECIAL_TOKENS[1:]), chat_template=CHAT_TEMPLATE
    )


def _learn_merges(pieces: list[str]) -> list[tuple[str, str]]:
    """BPE training on `pieces` until each is one token: the most frequent neighbouring pair
    first (ties: the first seen), so the same words always give the same merges."""
    words = [list(piece) for piece in dict.fromkeys(pieces) if len(piece) > 1]
    merges = []
    while words:
        counts = Counter(pair for word in words for pair in zip(word, word[1:]))
        pair = max(counts, key=counts.get)
        merges.append(pair)
        words = [merged for merged in (_merge(word, pair) for word in words) if len(merged) > 1]
    return merges


def _merge(word: list[str], pair: tuple[str, str]) -> list[str]:
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def qwen3_config(tokenizer, **sizes):
    """A Qwen3 text-encoder config with `tokenizer`'s special ids and, unless `sizes` says
    otherwise (a full-size model's real 151,936), its vocabulary size."""
    from transformers import Qwen3Config

    sizes.setdefault("vocab_size", len(tokenizer))
    return Qwen3Config(
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **sizes,
    )
