"""Tiny random models of every encoder family, written by the tests in Hugging Face layout.

Each family gets a tokenizer of its own kind (WordPiece cased and uncased, RoBERTa's
byte-level BPE with trimmed offsets, ModernBERT's byte-level BPE with untrimmed offsets
and [CLS]/[SEP], BigBird's SentencePiece) trained or written here on a small corpus, and
a 2-layer random model of its architecture. Nothing is downloaded.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForTokenClassification,
    BertConfig,
    BertForTokenClassification,
    PreTrainedTokenizerFast,
    RobertaConfig,
    RobertaForTokenClassification,
    RobertaTokenizerFast,
)

from support import tiny_models as tm

SMALL = dict(hidden_size=32, num_attention_heads=2, intermediate_size=64, num_hidden_layers=2)
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
LABELS = dict(id2label=dict(enumerate(tm.LABELS)), label2id={v: k for k, v in enumerate(tm.LABELS)})
# Words beyond ASCII: multi-byte characters stress byte-level offsets.
UNICODE_WORDS = ["µg", "°C", "naïve", "Sjögren", "β-blocker", "–"]


def corpus_sentence(rng: random.Random, n_words: int) -> str:
    """Text from the tiny vocabulary, some words with subword suffixes, some non-ASCII."""
    words = tm.PLAIN + tm.DISEASE_B + tm.DISEASE_I + tm.CHEM_B + tm.CHEM_I
    out = []
    for _ in range(n_words):
        w = rng.choice(words)
        r = rng.random()
        if r < 0.1:
            w += rng.choice(["s", "ed", "itis", "ol"])
        elif r < 0.15:
            w = w.capitalize()
        elif r < 0.2:
            w = rng.choice(UNICODE_WORDS)
        out.append(w)
        if rng.random() < 0.1:
            out.append(rng.choice([",", ".", "(", ")", "5", "%"]))
    return " ".join(out)


def training_corpus() -> list[str]:
    """Every vocabulary word both first in a line and after a space, many times over."""
    rng = random.Random(0)
    words = tm.PLAIN + tm.DISEASE_B + tm.DISEASE_I + tm.CHEM_B + tm.CHEM_I
    lines = [f"{w} {w}" for w in words + ["itis", "ol", "s", "ed"] for _ in range(20)]
    return lines + [corpus_sentence(rng, 20) for _ in range(300)]


def _byte_level_bpe(specials: list[str], vocab_size: int = 700) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(training_corpus(), trainer)
    return tok


def roberta_tokenizer(dest: Path) -> PreTrainedTokenizerFast:
    """RoBERTa's kind: byte-level BPE, <s> … </s>, <pad> = 1, offsets trimmed of spaces."""
    dest.mkdir(parents=True, exist_ok=True)
    bpe = _byte_level_bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.model.save(str(dest))  # vocab.json + merges.txt, as RoBERTa checkpoints ship
    vocab = json.loads((dest / "vocab.json").read_text())
    lines = (dest / "merges.txt").read_text().splitlines()
    merges = [tuple(m.split(" ")) for m in lines if m and not m.startswith("#")]
    tok = RobertaTokenizerFast(vocab=vocab, merges=merges)
    tok.save_pretrained(str(dest))
    return tok


def modernbert_tokenizer(dest: Path) -> PreTrainedTokenizerFast:
    """ModernBERT's kind: byte-level BPE with [CLS] … [SEP] and untrimmed offsets (a token's
    span includes the space it carries)."""
    specials = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
    bpe = _byte_level_bpe(specials)
    cls, sep = bpe.token_to_id("[CLS]"), bpe.token_to_id("[SEP]")
    bpe.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return _wrap(bpe, dest, specials)


def sentencepiece_tokenizer(dest: Path) -> PreTrainedTokenizerFast:
    """BigBird's kind: SentencePiece unigram with ▁ word markers, [CLS] … [SEP], <pad> = 0."""
    specials = ["<pad>", "</s>", "<s>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=600, special_tokens=specials, unk_token="<unk>", show_progress=False
    )
    tok.train_from_iterator(training_corpus(), trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return _wrap(tok, dest, specials)


def _wrap(tok: Tokenizer, dest: Path, specials: list[str]) -> PreTrainedTokenizerFast:
    names = {s.strip("[]<>/").lower(): s for s in specials}
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token=names["unk"],
        pad_token=names["pad"],
        mask_token=names["mask"],
        cls_token=names.get("cls", "[CLS]"),
        sep_token=names.get("sep", "[SEP]"),
    )
    fast.save_pretrained(str(dest))
    return fast


def wordpiece_uncased(dest: Path) -> PreTrainedTokenizerFast:
    return tm.write_tokenizer(dest, lowercase=True)


def wordpiece_cased(dest: Path) -> PreTrainedTokenizerFast:
    return tm.write_tokenizer(dest, lowercase=False)


@dataclass(frozen=True)
class TinyFamily:
    """How to write one family's tiny model: its tokenizer and its config."""

    name: str
    model_type: str
    tokenizer: Callable[[Path], PreTrainedTokenizerFast]
    config: dict  # passed to AutoConfig.for_model, sizes from SMALL
    # The window the table implies for ``config`` (tokens, specials included).
    expected_window: int


FAMILIES: dict[str, TinyFamily] = {
    f.name: f
    for f in [
        TinyFamily("bert-uncased", "bert", wordpiece_uncased, dict(max_position_embeddings=64), 64),
        TinyFamily("bert-cased", "bert", wordpiece_cased, dict(max_position_embeddings=64), 64),
        TinyFamily(
            "gatortron", "megatron-bert", wordpiece_uncased, dict(max_position_embeddings=64), 64
        ),
        # RoBERTa: 66 positions, ids start after pad id 1 → 64 usable
        TinyFamily(
            "roberta",
            "roberta",
            roberta_tokenizer,
            dict(max_position_embeddings=66, pad_token_id=1, bos_token_id=0, eos_token_id=2),
            64,
        ),
        TinyFamily(
            "longformer",
            "longformer",
            roberta_tokenizer,
            dict(
                max_position_embeddings=1026,
                pad_token_id=1,
                bos_token_id=0,
                eos_token_id=2,
                attention_window=[32, 32],
                sep_token_id=2,
            ),
            1024,
        ),
        TinyFamily(
            "bigbird",
            "big_bird",
            sentencepiece_tokenizer,
            dict(
                max_position_embeddings=1024,
                pad_token_id=0,
                attention_type="block_sparse",
                block_size=16,
                num_random_blocks=2,
            ),
            1024,
        ),
        TinyFamily(
            "modernbert",
            "modernbert",
            modernbert_tokenizer,
            dict(max_position_embeddings=1024, local_attention=32, num_hidden_layers=3),
            1024,
        ),
    ]
}


def _family_config(fam: TinyFamily, tok: PreTrainedTokenizerFast, **extra) -> AutoConfig:
    kw = {**SMALL, **NO_DROPOUT, **fam.config, **extra, "vocab_size": len(tok)}
    if fam.model_type == "modernbert":
        kw.update(
            pad_token_id=tok.pad_token_id,
            cls_token_id=tok.cls_token_id,
            sep_token_id=tok.sep_token_id,
            bos_token_id=tok.cls_token_id,
            eos_token_id=tok.sep_token_id,
        )
        for k in NO_DROPOUT:
            kw.pop(k)
    return AutoConfig.for_model(fam.model_type, **kw)


def write_family(name: str, dest: Path, task: str, seed: int = 0) -> Path:
    """A random tiny model of family ``name`` for ``task`` ("ner" or "embed") at ``dest``."""
    fam = FAMILIES[name]
    tok = fam.tokenizer(dest)
    torch.manual_seed(seed)
    if task == "ner":
        model = AutoModelForTokenClassification.from_config(_family_config(fam, tok, **LABELS))
    else:
        model = AutoModel.from_config(_family_config(fam, tok))
    model.eval().save_pretrained(str(dest))
    return dest


def write_sentence_transformers(dest: Path, pooling: str, seed: int = 0) -> Path:
    """A BERT folder in sentence-transformers layout declaring ``pooling`` ("cls"/"mean")."""
    write_family("bert-uncased", dest, "embed", seed)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
        {
            "idx": 2,
            "name": "2",
            "path": "2_Normalize",
            "type": "sentence_transformers.models.Normalize",
        },
    ]
    (dest / "modules.json").write_text(json.dumps(modules))
    (dest / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 48}))
    (dest / "1_Pooling").mkdir(exist_ok=True)
    (dest / "2_Normalize").mkdir(exist_ok=True)
    pool_cfg = {
        "word_embedding_dimension": 32,
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": False,
    }
    (dest / "1_Pooling" / "config.json").write_text(json.dumps(pool_cfg))
    return dest


def oracle_label(token: str) -> str:
    """The oracle's label for a token of any tokenizer kind, whatever its context: the
    WordPiece rule, after dropping the word markers of byte-level BPE (Ġ) and
    SentencePiece (▁)."""
    return tm.oracle_label(token.removeprefix("Ġ").removeprefix("▁"))


def write_oracle(
    dest: Path,
    tokenizer: Callable[[Path], PreTrainedTokenizerFast],
    roberta: bool,
    max_positions: int,
) -> Path:
    """A context-free token classifier over ``tokenizer``'s vocabulary: no layers, zero
    position and type embeddings, so a token's label depends on the token alone.

    ``roberta`` builds RoBERTa's embeddings (position ids from pad id + 1), so running
    it at the default window checks the position offset against the real model.
    """
    tok = tokenizer(dest)
    common = dict(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=0,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_positions,
        pad_token_id=tok.pad_token_id,
        **NO_DROPOUT,
        **LABELS,
    )
    if roberta:
        model = RobertaForTokenClassification(RobertaConfig(**common)).eval()
        base = model.roberta
    else:
        model = BertForTokenClassification(BertConfig(**common)).eval()
        base = model.bert
    with torch.no_grad():
        emb = base.embeddings
        emb.position_embeddings.weight.zero_()
        emb.token_type_embeddings.weight.zero_()
        emb.word_embeddings.weight.zero_()
        for token, idx in tok.get_vocab().items():
            emb.word_embeddings.weight[idx, tm.LABELS.index(oracle_label(token))] = 8.0
        emb.LayerNorm.weight.fill_(1.0)
        emb.LayerNorm.bias.zero_()
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
        for k in range(len(tm.LABELS)):
            model.classifier.weight[k, k] = 4.0
    model.save_pretrained(str(dest))
    return dest
