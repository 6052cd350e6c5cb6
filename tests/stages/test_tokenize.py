"""The tokenize stage: the tokenizer's own output, as arrays, once per distinct tokenizer."""

from __future__ import annotations

import pickle
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from support import family_models as fm

from pipeline import schemas as S
from pipeline.execution.plan import tokenizer_groups
from pipeline.models import loading as models
from pipeline.sample import defaults
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
    out = Tokenize.of_model("ner", tokenizer_dirs[kind])(batch_of(sample))
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
    out = Tokenize.of_model(("ner", "embed"), tokenizer_dirs["wordpiece-uncased"])(
        batch_of(sample, ok=[True, False, True])
    )
    for name in (S.TOKEN_IDS, S.TOKEN_STARTS, S.TOKEN_ENDS, S.WORD_IDS):
        ner, embed = (out.column(S.tokens_column(r, name)) for r in ("ner", "embed"))
        assert ner.equals(embed)
    lengths = [len(a) for a in column_arrays(out, S.tokens_column("ner", S.TOKEN_IDS))]
    assert lengths[1] == 0 and lengths[0] > 0 and lengths[2] > 0


def definition(model_dir: str | Path) -> models.TokenizerDef:
    return models.TokenizerDef.of(models.load_tokenizer(Path(model_dir)))


def test_digest_tells_tokenizers_apart_and_ignores_truncation(tokenizer_dirs, tmp_path) -> None:
    digests = {kind: definition(d).sha256 for kind, d in tokenizer_dirs.items()}
    assert len(set(digests.values())) == len(digests)  # cased vs uncased included
    # the same tokenizer written again elsewhere, and one saved to truncate and pad
    tok = fm.wordpiece_uncased(tmp_path / "again")
    assert definition(tmp_path / "again").sha256 == digests["wordpiece-uncased"]
    tok.backend_tokenizer.enable_truncation(max_length=16)
    tok.backend_tokenizer.enable_padding(length=16)
    tok.save_pretrained(str(tmp_path / "truncating"))
    assert definition(tmp_path / "truncating").sha256 == digests["wordpiece-uncased"]
    # splitting literal special-token strings encodes differently: another digest
    split = models.load_tokenizer(tmp_path / "again")
    split.split_special_tokens = True
    assert models.TokenizerDef.of(split).sha256 != digests["wordpiece-uncased"]


def test_actors_rebuild_the_tokenizer_without_transformers(tokenizer_dirs) -> None:
    """The definition the driver hands the actors builds in a process that never imports
    transformers or torch, and encodes as the model folder's tokenizer does."""
    tok = definition(tokenizer_dirs["minilm"])
    code = (
        "import sys, pickle; from pipeline.stages.tokenize import Tokenize\n"
        "stage = Tokenize('ner', pickle.loads(sys.stdin.buffer.read()))\n"
        "enc = stage.backend.encode('Crohn disease [SEP] 5 mg', add_special_tokens=False)\n"
        "print(enc.ids, enc.offsets, 'transformers' in sys.modules, 'torch' in sys.modules)"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], input=pickle.dumps(tok), capture_output=True, check=True
    )
    ref = models.load_tokenizer(Path(tokenizer_dirs["minilm"]))(
        "Crohn disease [SEP] 5 mg", add_special_tokens=False, return_offsets_mapping=True
    )
    want = f"{ref['input_ids']} {[tuple(o) for o in ref['offset_mapping']]} False False"
    assert res.stdout.decode().strip() == want


def test_models_with_one_tokenizer_share_a_group() -> None:
    a, b = models.TokenizerDef('{"a": 1}'), models.TokenizerDef('{"b": 1}')
    assert tokenizer_groups({"ner": a, "embed": a}) == [("ner", "embed")]
    assert tokenizer_groups({"ner": a, "embed": b}) == [("ner",), ("embed",)]
    assert tokenizer_groups({"embed": a}) == [("embed",)]
    # the same definition with special-token splitting on is another tokenizer
    split = models.TokenizerDef('{"a": 1}', split_special_tokens=True)
    assert tokenizer_groups({"ner": a, "embed": split}) == [("ner",), ("embed",)]


def test_a_model_without_a_tokenizer_stops_the_plan_before_any_work(tmp_path) -> None:
    """A folder without tokenizer files loads in transformers as an empty tokenizer that
    maps every word to [UNK]; the driver refuses it while planning, before Ray starts."""
    import pyarrow.parquet as pq
    from support import tiny_models as tm

    from pipeline.config import AnnotateConfig, ModelSpec
    from pipeline.execution.plan import make_plan
    from pipeline.types import InputError

    model = tm.write_random_encoder(tmp_path / "encoder")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        (model / name).unlink(missing_ok=True)
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"doc_id": ["a"], "text": ["fever"]}), tmp_path / "in" / "p.parquet")
    cfg = AnnotateConfig(
        str(tmp_path / "in"), str(tmp_path / "out"), embed=ModelSpec(str(model), "embed")
    )
    with pytest.raises(InputError, match=f"embed model {model}.*no tokenizer vocabulary"):
        make_plan(cfg)
