"""Byte-level BPE tokenizer for the demo model, built with `tokenizers` and wrapped for `transformers`.

Byte-level (GPT-2 style) so any text encodes without unknown tokens, and small (vocab ~1024) so made-up names
split into several pieces: multi-token answers exist, which the exact-answer-span analyses need.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
SPECIAL_TOKENS = (PAD, BOS, EOS)  # ids 0, 1, 2, in this order


def build_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` and wrap it (BOS prepended by default, left padding)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    for i, s in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(s) == i, (s, tok.token_to_id(s))
    # BOS on every encoding, as the training data has it: `tokenizer(prompt)` then matches training exactly,
    # and tokenizing with the tokenizer's defaults (as every analysis does) gives the right input without
    # special-casing.
    # ByteLevel(trim_offsets) keeps the leading space out of token offsets, so subject spans found by
    # character offsets cover the name only.
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=True),
            processors.TemplateProcessing(
                single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, SPECIAL_TOKENS.index(BOS))]
            ),
        ]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        padding_side="left",  # batched generation appends on the right, so padding goes left
        model_max_length=256,
        clean_up_tokenization_spaces=False,
        model_input_names=PORTABLE_TOKENIZER_CONFIG["model_input_names"],  # no token_type_ids under 4.x either
    )


# transformers 5 records its own class name, "TokenizersBackend", which transformers 4 does not know.
# "PreTrainedTokenizerFast" names the same tokenizer in both (in 5.x it is an alias of TokenizersBackend), and the
# model's inputs are named, since 4.x's PreTrainedTokenizerFast would otherwise add token_type_ids, which a Llama's
# generate() refuses. The token ids come from tokenizer.json and do not change.
PORTABLE_TOKENIZER_CONFIG = {
    "tokenizer_class": "PreTrainedTokenizerFast",
    "model_input_names": ["input_ids", "attention_mask"],
}
PORTABLE_TOKENIZER_CLASS = PORTABLE_TOKENIZER_CONFIG["tokenizer_class"]


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, out_dir: str | Path) -> None:
    """`save_pretrained`, then PORTABLE_TOKENIZER_CONFIG, so that transformers 4.57 and 5.x both load it alike."""
    tokenizer.save_pretrained(str(out_dir))
    make_tokenizer_config_portable(out_dir)


def make_tokenizer_config_portable(out_dir: str | Path) -> None:
    """Set PORTABLE_TOKENIZER_CONFIG's keys in tokenizer_config.json (nothing else changes)."""
    path = Path(out_dir) / "tokenizer_config.json"
    cfg = json.loads(path.read_text())
    if any(cfg.get(k) != v for k, v in PORTABLE_TOKENIZER_CONFIG.items()):
        cfg.update(PORTABLE_TOKENIZER_CONFIG)
        path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
