"""Encoder families and their defaults: window length, pooling, tokenizer kind (one table).

A family is recognised by the ``model_type`` in the model's ``config.json``; every
length here is in tokens, special tokens included. docs/families.md is this table in
prose, with the checkpoints users bring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.config import DEFAULT_MAX_WINDOW


@dataclass(frozen=True)
class Family:
    """What the job needs to know about one architecture."""

    name: str
    model_types: tuple[str, ...]
    tokenizer: str  # the tokenizer kind its checkpoints ship
    # Windows may use the whole position table, beyond DEFAULT_MAX_WINDOW tokens.
    long_context: bool = False
    # Position ids start after the padding id, so pad_token_id + 1 table rows are unusable
    # (RoBERTa's 514 positions hold 512 tokens).
    position_offset: bool = False
    # Global attention on the first token (Longformer's convention for the <s> token).
    global_first_token: bool = False
    # Block-sparse attention whose result depends on the padded length of the pass.
    block_sparse: bool = False


FAMILIES: tuple[Family, ...] = (
    Family("BERT", ("bert",), "WordPiece, cased or uncased"),
    Family("GatorTron", ("megatron-bert",), "WordPiece"),
    Family(
        "RoBERTa", ("roberta", "xlm-roberta", "camembert"), "byte-level BPE", position_offset=True
    ),
    Family("BERTweet", ("bertweet",), "BPE", position_offset=True),
    Family(
        "Longformer",
        ("longformer",),
        "byte-level BPE",
        long_context=True,
        position_offset=True,
        global_first_token=True,
    ),
    Family("BigBird", ("big_bird",), "SentencePiece", long_context=True, block_sparse=True),
    Family("ModernBERT", ("modernbert",), "byte-level BPE, [CLS]/[SEP]", long_context=True),
    Family("NomicBERT", ("nomic_bert",), "WordPiece (remote code)", long_context=True),
)

OTHER = Family("other", (), "as the folder declares")


def family_of(model_type: str) -> Family:
    """The family of a ``config.json`` ``model_type``; ``OTHER`` (BERT-like rules) if unknown."""
    for f in FAMILIES:
        if model_type in f.model_types:
            return f
    return OTHER


def position_limit(config: dict[str, Any]) -> int | None:
    """Tokens the model's position table holds (special tokens included), or None when
    its config declares no table."""
    if not config.get("max_position_embeddings"):
        return None
    positions = int(config["max_position_embeddings"])
    if family_of(config.get("model_type", "")).position_offset:
        pad = config.get("pad_token_id")
        positions -= (1 if pad is None else int(pad)) + 1
    return positions


def window_length(config: dict[str, Any]) -> int:
    """Default tokens per window, special tokens included, from the model config.

    ``max_position_embeddings`` minus the position offset (``pad_token_id + 1`` for
    RoBERTa-style models: 514 → 512), capped at ``DEFAULT_MAX_WINDOW`` except for
    long-context families. The tokenizer's ``model_max_length`` is never used: several
    biomedical checkpoints declare none (1e30).
    """
    fam = family_of(config.get("model_type", ""))
    positions = position_limit(config) or DEFAULT_MAX_WINDOW
    if fam.long_context:
        return positions
    return min(positions, DEFAULT_MAX_WINDOW)
