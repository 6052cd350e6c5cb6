"""Tiny models written by the tests themselves: random BERTs and a context-free oracle.

Nothing is downloaded: the vocab is written here, configs are random.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import BertConfig, BertForTokenClassification, BertModel, BertTokenizer

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Words the oracle labels: entity starts and continuations.
DISEASE_B = ["diabetes", "asthma", "hepatitis", "pneumonia", "sepsis", "anemia"]
DISEASE_I = ["mellitus", "failure", "disease"]
CHEM_B = ["aspirin", "metformin", "cisplatin", "heparin", "insulin"]
CHEM_I = ["acid", "sodium"]
PLAIN = (
    "the patient was given for with and of a an in on to at by no history denies reports "
    "presents chronic acute heart renal kidney daily dose mg treated started stopped "
    "blood pressure normal exam follow up plan noted which after before during severe "
    "mild left right chest pain fever cough study results showed patients group"
).split()
PIECES = ["##s", "##ed", "##ing", "##ly", "##itis", "##ase", "##ol"]
PUNCT = [".", ",", "(", ")", ";", ":", "-", "/", "%", "0", "1", "2", "3", "5"]
LABELS = ["O", "B-Disease", "I-Disease", "B-Chemical", "I-Chemical"]


def vocab() -> list[str]:
    return SPECIAL + PUNCT + PLAIN + DISEASE_B + DISEASE_I + CHEM_B + CHEM_I + PIECES


def oracle_label(token: str) -> str:
    """The label the oracle model gives a vocab token, whatever its context."""
    if token in DISEASE_B:
        return "B-Disease"
    if token in DISEASE_I or token == "##itis":
        return "I-Disease"
    if token in CHEM_B:
        return "B-Chemical"
    if token in CHEM_I or token == "##ol":
        return "I-Chemical"
    return "O"


def write_tokenizer(dest: Path, lowercase: bool = True) -> BertTokenizer:
    dest.mkdir(parents=True, exist_ok=True)
    words = vocab() if lowercase else vocab() + [w.capitalize() for w in DISEASE_B + CHEM_B]
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(words)}, do_lower_case=lowercase)
    tok.save_pretrained(str(dest))
    return tok


def _config(n_vocab: int, **kw) -> BertConfig:
    base = dict(
        vocab_size=n_vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    base.update(kw)
    return BertConfig(**base)


def write_random_ner(dest: Path, seed: int = 0, max_positions: int = 128) -> Path:
    """A random 2-layer BERT token classifier (hidden 32) with BIO labels."""
    tok = write_tokenizer(dest)
    torch.manual_seed(seed)
    cfg = _config(
        len(tok),
        max_position_embeddings=max_positions,
        id2label=dict(enumerate(LABELS)),
        label2id={v: k for k, v in enumerate(LABELS)},
    )
    BertForTokenClassification(cfg).eval().save_pretrained(str(dest))
    return dest


def write_random_encoder(dest: Path, seed: int = 0, max_positions: int = 128) -> Path:
    """A random 2-layer BERT (hidden 32) for embeddings."""
    tok = write_tokenizer(dest)
    torch.manual_seed(seed)
    BertModel(_config(len(tok), max_position_embeddings=max_positions)).eval().save_pretrained(
        str(dest)
    )
    return dest


def write_oracle_ner(dest: Path, lowercase: bool = True) -> Path:
    """A token classifier whose prediction for a token ignores its context.

    No transformer layers, zero position and type embeddings: the output for a token
    is LayerNorm(word embedding), which points at the token's oracle label.
    """
    tok = write_tokenizer(dest, lowercase)
    cfg = _config(
        len(tok),
        num_hidden_layers=0,
        id2label=dict(enumerate(LABELS)),
        label2id={v: k for k, v in enumerate(LABELS)},
    )
    model = BertForTokenClassification(cfg).eval()
    with torch.no_grad():
        emb = model.bert.embeddings
        emb.position_embeddings.weight.zero_()
        emb.token_type_embeddings.weight.zero_()
        emb.word_embeddings.weight.zero_()
        for token, idx in tok.get_vocab().items():
            label = oracle_label(token.lower() if not lowercase else token)
            emb.word_embeddings.weight[idx, LABELS.index(label)] = 8.0
        emb.LayerNorm.weight.fill_(1.0)
        emb.LayerNorm.bias.zero_()
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
        for k in range(len(LABELS)):
            model.classifier.weight[k, k] = 4.0
    model.save_pretrained(str(dest))
    return dest
