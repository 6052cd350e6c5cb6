"""The tokenize stage: the tokenizer's own output, as arrays, once per distinct tokenizer."""

from __future__ import annotations

import random
from pathlib import Path

import family_models as fm
import numpy as np
import pyarrow as pa
import pytest

from pipeline import defaults, models
from pipeline import schemas as S
from pipeline.models import ModelInfo
from pipeline.plan import tokenizer_groups
from pipeline.stages.tokenize import Tokenize, column_arrays

KINDS = {
    "wordpiece-uncased": fm.wordpiece_uncased,
    "wordpiece-cased": fm.wordpiece_cased,
    "roberta-bpe": fm.roberta_tokenizer,
    "modernbert-bpe": fm.modernbert_tokenizer,
    "sentencepiece": fm.sentencepiece_tokenizer,
}


@pytest.fixture(scope="module")
def tokenizer_dirs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tokenizers")
    out = {"minilm": defaults.default_embed_model()}
    for name, write in KINDS.items():
        write(root / name)
        out[name] = str(root / name)
    return out


def texts() -> list[str]:
    rng = random.Random(7)
    tricky = [
        "",
        "   \n\t ",
        "Literal [CLS] and [SEP] and <s> </s> [MASK] in a note.",
        "naïve Sjögren β-blocker 5 µg at 37 °C – 𝛼-synuclein 🙂",
        "fever, " * 700,  # far beyond any window
        "Crohn's  disease\u00a0(CD)\u2009and\u3000colitis.",
    ]
    return tricky + [fm.corpus_sentence(rng, rng.randint(1, 900)) for _ in range(40)]


def batch_of(texts: list[str], ok: list[bool] | None = None) -> pa.Table:
    ok = ok or [True] * len(texts)
    status = [S.STATUS_OK if k else S.STATUS_ERROR for k in ok]
    return pa.table({S.TEXT_INTERNAL: texts, S.STATUS_INTERNAL: status})


@pytest.mark.parametrize("kind", [*KINDS, "minilm"])
def test_stage_gives_what_the_tokenizer_call_gives(tokenizer_dirs, kind) -> None:
    """Ids, character offsets and word ids equal transformers' own ``tokenizer(...)``
    call, texts far beyond the window and literal special-token strings included."""
    tok = models.load_tokenizer(Path(tokenizer_dirs[kind]))
    sample = texts()
    out = Tokenize("ner", tokenizer_dirs[kind])(batch_of(sample))
    ref = tok(sample, add_special_tokens=False, return_offsets_mapping=True, truncation=False)
    got = {
        name: column_arrays(out, S.tokens_column("ner", name))
        for name in (S.TOKEN_IDS, S.TOKEN_STARTS, S.TOKEN_ENDS, S.WORD_IDS)
    }
    for i in range(len(sample)):
        offsets = np.asarray(ref["offset_mapping"][i], dtype=np.int64).reshape(-1, 2)
        words = [-1 if w is None else w for w in ref.word_ids(i)]
        assert got[S.TOKEN_IDS][i].tolist() == ref["input_ids"][i], (kind, i)
        assert got[S.TOKEN_STARTS][i].tolist() == offsets[:, 0].tolist(), (kind, i)
        assert got[S.TOKEN_ENDS][i].tolist() == offsets[:, 1].tolist(), (kind, i)
        assert got[S.WORD_IDS][i].tolist() == words, (kind, i)
    assert len(got[S.TOKEN_IDS][4]) > 512  # nothing was truncated


def test_shared_tokenizer_fills_every_role_and_skips_bad_rows(tokenizer_dirs) -> None:
    sample = ["good text here", "patient text of a bad row", "more"]
    out = Tokenize(("ner", "embed"), tokenizer_dirs["wordpiece-uncased"])(
        batch_of(sample, ok=[True, False, True])
    )
    for name in (S.TOKEN_IDS, S.TOKEN_STARTS, S.TOKEN_ENDS, S.WORD_IDS):
        ner, embed = (out.column(S.tokens_column(r, name)) for r in ("ner", "embed"))
        assert ner.equals(embed)
    lengths = [len(a) for a in column_arrays(out, S.tokens_column("ner", S.TOKEN_IDS))]
    assert lengths[1] == 0 and lengths[0] > 0 and lengths[2] > 0


def test_digest_tells_tokenizers_apart_and_ignores_truncation(tokenizer_dirs, tmp_path) -> None:
    digests = {
        kind: models.tokenizer_digest(models.load_tokenizer(Path(d)))
        for kind, d in tokenizer_dirs.items()
    }
    assert len(set(digests.values())) == len(digests)  # cased vs uncased included
    # the same tokenizer written again elsewhere, and one set to truncate and pad
    fm.wordpiece_uncased(tmp_path / "again")
    again = models.load_tokenizer(tmp_path / "again")
    assert models.tokenizer_digest(again) == digests["wordpiece-uncased"]
    again.backend_tokenizer.enable_truncation(max_length=16)
    again.backend_tokenizer.enable_padding(length=16)
    assert models.tokenizer_digest(again) == digests["wordpiece-uncased"]


def info(digest: str) -> ModelInfo:
    return ModelInfo("src", "/m", "bert", 512, "w", None, tokenizer_sha256=digest)


def test_models_with_one_tokenizer_share_a_group() -> None:
    assert tokenizer_groups({"ner": info("a"), "embed": info("a")}) == [("ner", "embed")]
    assert tokenizer_groups({"ner": info("a"), "embed": info("b")}) == [("ner",), ("embed",)]
    assert tokenizer_groups({"embed": info("a")}) == [("embed",)]
    # an unknown digest never joins another model's stage
    assert tokenizer_groups({"ner": info(""), "embed": info("")}) == [("ner",), ("embed",)]
