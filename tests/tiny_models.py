"""Tiny random-weight models of each supported family, saved with save_pretrained for real `hw.load` round trips."""

from __future__ import annotations

from pathlib import Path

import torch

# Small but structurally faithful: 2-4 layers, several heads, GQA where the family has it.
FAMILIES: dict[str, tuple[str, dict]] = {
    "llama": (
        "LlamaConfig",
        dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
        ),
    ),
    "mistral": (
        "MistralConfig",
        dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
        ),
    ),
    "qwen2": (
        "Qwen2Config",
        dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
        ),
    ),
    "gemma": (
        "GemmaConfig",
        dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=16,
            max_position_embeddings=256,
        ),
    ),
    "phi3": (
        "Phi3Config",
        dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            pad_token_id=0,
        ),
    ),
    "gpt2": ("GPT2Config", dict(n_embd=64, n_layer=3, n_head=4, n_positions=256)),
    "gpt_neox": (
        "GPTNeoXConfig",
        dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=256,
        ),
    ),
    "opt": (
        "OPTConfig",
        dict(
            hidden_size=64,
            ffn_dim=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=256,
            word_embed_proj_dim=64,
        ),
    ),
}

WORDS = (
    "the capital of is a city in country what Q A : ? . , and which language speaks spoken "
    "Velmora Ostrand Kelvar Brisa Tamor north south east west island river"
).split()


def tiny_tokenizer(pad: bool = True, size: int | None = None):
    """A word-level tokenizer built with `tokenizers` (no download); `pad=False` leaves the pad token unset.

    size: fill the vocabulary with filler words w0, w1, ... up to `size` ids, so a random model's every token id
    decodes to a word (the family sweep's answers are then never empty)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    words = specials + sorted(set(WORDS))
    words += [f"w{i}" for i in range(max(0, (size or 0) - len(words)))]
    vocab = {w: i for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    kw = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    if pad:
        kw["pad_token"] = "<pad>"
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kw)


def save_tiny(family: str, path: Path, seed: int = 0, pad: bool = True, **overrides) -> Path:
    """Build a random-weight model of `family` from its config and save it (with a tokenizer) to `path`."""
    import transformers

    cls_name, kw = FAMILIES[family]
    tok = tiny_tokenizer(pad=pad)
    cfg = getattr(transformers, cls_name)(vocab_size=64, bos_token_id=1, eos_token_id=2, **{**kw, **overrides})
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return Path(path)
