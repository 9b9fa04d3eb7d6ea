"""The T5 tokenizer the FLUX.1 test models read prompts with, generated here (nothing is
downloaded), and the config of a T5 encoder that matches it."""

from __future__ import annotations

# T5's own order: the pipeline pads with id 0 and T5 ends every prompt with </s> = 1.
SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")

# Printable ASCII and Latin-1: what prompts are written in; anything else reads as <unk>.
_CHARACTERS = [chr(c) for c in (*range(0x21, 0x7F), *range(0xA1, 0x180)) if c != 0xAD]


def t5_tokenizer():
    """A character-level T5Tokenizer (T5TokenizerFast in transformers 4): T5's Unigram
    model, pre-tokenizer and </s> post-processor, over single characters instead of
    SentencePiece's 32,000 learned pieces, and without the 100 <extra_id_*> sentinels
    (span-corruption training needs them; encoding prompts does not)."""
    from transformers import T5Tokenizer

    # Unigram scores: one piece per character, so each segmentation is the same; "▁" is the
    # word start T5's Metaspace pre-tokenizer puts before every word.
    vocab = [(token, 0.0) for token in SPECIAL_TOKENS] + [("▁", -1.0)]
    vocab += [(char, -2.0) for char in _CHARACTERS]
    # 512: the longest prompt FluxPipeline lets T5 read (its max_sequence_length).
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=512)


def t5_config(tokenizer, **sizes):
    """A T5 encoder config with `tokenizer`'s special ids and, unless `sizes` says otherwise
    (a full-size model's real 32,128), its vocabulary size."""
    from transformers import T5Config

    sizes.setdefault("vocab_size", len(tokenizer))
    return T5Config(
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        **sizes,
    )
