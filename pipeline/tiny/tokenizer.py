"""Tokenizers for the tiny models, trained locally on a built-in corpus.

Real VLM tokenizers cannot be downloaded here, and hand-written vocabularies would not
exercise the real tokenization code. So we train a small BPE with the `tokenizers`
library in the same style as the family's real tokenizer and wrap it in that
family's transformers tokenizer class:

* Qwen (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, LLaVA-OneVision's Qwen2 LLM): byte-level BPE
  with Qwen2's pre-tokenizer regex, wrapped in ``Qwen2Tokenizer``; every byte is in
  the base alphabet, so any text round-trips.
* LLaMA (LLaVA-1.5's Vicuna LLM): SentencePiece-style BPE (``▁`` word marker) with
  byte fallback, wrapped in ``LlamaTokenizer``. As in LLaMA the vocabulary starts
  ``<unk>`` = 0, ``<s>`` = 1, ``</s>`` = 2, ``<0x00>``..``<0xFF>`` = 3..258.

Special tokens are appended after the trained vocabulary in the real tokenizer's
order, so their relative layout matches the real one (ids differ, the model config is
built from whatever ids the tokenizer ends up with). Training is deterministic:
same corpus, same vocabulary, on any machine.
"""

from __future__ import annotations

import json
import string

from tokenizers import AddedToken, Regex, Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer
from transformers import LlamaTokenizer, Qwen2Tokenizer
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

from pipeline.tiny.corpus import CORPUS

# Upper bound on the trained vocabulary; the corpus runs out of merges first, so the
# size is set by the corpus (about 1,200 tokens for Qwen, 1,500 with LLaMA's bytes).
_MAX_TRAINED_VOCAB = 2048

# Qwen2's special tokens in id order (151643.. in the real vocabulary).
QWEN2_SPECIAL = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# Added (non-special) tokens Qwen2.5 appends after the vision ones, and Qwen3 after those.
QWEN2_5_ADDED = (
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
QWEN3_ADDED = QWEN2_5_ADDED + ("<tool_response>", "</tool_response>", "<think>", "</think>")


def _train(tokenizer: Tokenizer, trainer: BpeTrainer) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train on the corpus; return the BPE vocabulary and merges."""
    tokenizer.train_from_iterator(CORPUS.splitlines(keepends=True), trainer)
    model = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges


def qwen_tokenizer(special: tuple[str, ...], added: tuple[str, ...] = ()) -> Qwen2Tokenizer:
    """A byte-level BPE ``Qwen2Tokenizer`` with ``special`` then ``added`` tokens appended.

    eos is ``<|im_end|>`` and pad ``<|endoftext|>``, as in the Qwen instruct tokenizers.
    """
    trainer_tok = Tokenizer(BPE())
    trainer_tok.normalizer = normalizers.NFC()
    trainer_tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = BpeTrainer(
        vocab_size=_MAX_TRAINED_VOCAB,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    vocab, merges = _train(trainer_tok, trainer)
    # The class adds its eos/pad at construction; start with <|endoftext|> only so that
    # the special tokens keep the real id order, then make <|im_end|> the eos.
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        errors="replace",
        model_max_length=32768,
    )
    _append_tokens(tokenizer, special, added)
    tokenizer.eos_token = "<|im_end|>"
    return tokenizer


def llama_tokenizer(special: tuple[str, ...]) -> LlamaTokenizer:
    """A SentencePiece-style BPE ``LlamaTokenizer`` (byte fallback) with ``special`` appended."""
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    trainer_tok = Tokenizer(BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    trainer = BpeTrainer(
        vocab_size=_MAX_TRAINED_VOCAB,
        special_tokens=["<unk>", "<s>", "</s>", *byte_tokens],
        initial_alphabet=list(string.printable.strip()) + ["▁"],
        limit_alphabet=len(string.printable) + 1,
        show_progress=False,
    )
    vocab, merges = _train(trainer_tok, trainer)
    tokenizer = LlamaTokenizer(vocab=vocab, merges=merges, add_bos_token=True, add_eos_token=False)
    _append_tokens(tokenizer, special, ())
    return tokenizer


def _append_tokens(tokenizer, special: tuple[str, ...], added: tuple[str, ...]) -> None:
    """Append special then plain added tokens, skipping ones the class already added."""
    vocab = tokenizer.get_vocab()
    new_special = [AddedToken(t, special=True, normalized=False) for t in special if t not in vocab]
    tokenizer.add_tokens(new_special, special_tokens=True)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in added])
