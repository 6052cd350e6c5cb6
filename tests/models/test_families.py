"""Every encoder family: default windows and pooling, offsets of every tokenizer kind,
family forward conventions, and the whole annotate job on a tiny model of each.

Expected windows come from the issue's table applied to each config by hand
(514 → 512 for RoBERTa, the full table for long-context models), not from the code.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from support.documents import docs, embed, run_ner
from support.family_models import (
    FAMILIES,
    corpus_sentence,
    modernbert_tokenizer,
    roberta_tokenizer,
    sentencepiece_tokenizer,
    write_family,
    write_oracle,
    write_sentence_transformers,
)
from support.job_helpers import read_run, read_table, run_job

from pipeline import schemas as S
from pipeline.config import EmbedSettings, EncoderScheduling, ModelSpec, NerSettings
from pipeline.execution.plan import resolve_model
from pipeline.models import loading as models
from pipeline.stages.embed import EmbedStage
from pipeline.stages.encoder import Encoder
from pipeline.stages.ner import NerStage
from pipeline.stages.tokenize import Tokenize
from pipeline.stages.write import embedding_rows, entity_rows


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory) -> dict[str, dict[str, str]]:
    """Per family, a random token classifier ("ner") and a random encoder ("embed")."""
    root = tmp_path_factory.mktemp("families")
    out = {
        name: {
            "ner": str(write_family(name, root / f"{name}-ner", "ner", seed=1)),
            "embed": str(write_family(name, root / f"{name}-embed", "embed", seed=2)),
        }
        for name in FAMILIES
    }
    sap = root / "SapBERT-from-PubMedBERT-tiny"
    out["sapbert"] = {"embed": str(write_family("bert-uncased", sap, "embed", seed=3))}
    out["st-cls"] = {"embed": str(write_sentence_transformers(root / "st-cls", "cls", seed=4))}
    return out


def family_texts(seed: int) -> list[str]:
    """A document of ~3000 tokens (several 1024-token windows), whitespace at the edges
    and inside, non-ASCII characters, and short ones."""
    rng = random.Random(seed)
    return [
        " ".join(corpus_sentence(rng, 15) + " ." for _ in range(150)),
        "  \n diabetes mellitus and\taspirin  ",
        corpus_sentence(rng, 30),
        "Sjögren  naïve µg °C – β-blocker heparin\n\nsepsis",
        corpus_sentence(rng, 200),
    ]


def check_entities(rows: list[dict], texts: dict[str, str]) -> None:
    assert rows, "the model predicted no entity at all"
    for r in rows:
        assert r["text"] == texts[r["doc_id"]][r["start"] : r["end"]]
        assert r["text"] and not r["text"][0].isspace() and not r["text"][-1].isspace()


def check_coverage(chunks: list[dict], texts: dict[str, str]) -> None:
    """The windows of each document cover every non-space character."""
    for doc_id, text in texts.items():
        covered = np.zeros(len(text), dtype=bool)
        for c in chunks:
            if c["doc_id"] == doc_id:
                covered[c["start"] : c["end"]] = True
        missing = [i for i, ch in enumerate(text) if not ch.isspace() and not covered[i]]
        assert not missing, f"{doc_id}: characters {missing[:5]} in no window"


# --- default windows -------------------------------------------------------------------

PUBLISHED = [  # checkpoint, model_type, max_position_embeddings, pad_token_id, window
    ("BioBERT v1.1", "bert", 512, 0, 512),
    ("PubMedBERT", "bert", 512, 0, 512),
    ("a BERT with 1024 positions", "bert", 1024, 0, 512),
    ("GatorTron-base", "megatron-bert", 512, 0, 512),
    ("RoBERTa-base-PM", "roberta", 514, 1, 512),
    ("XLM-R", "xlm-roberta", 514, 1, 512),
    ("RoBERTa, pad id 0", "roberta", 513, 0, 512),
    ("RoBERTa, no pad id", "roberta", 514, None, 512),
    ("Clinical-Longformer", "longformer", 4098, 1, 4096),
    ("Clinical-BigBird", "big_bird", 4096, 0, 4096),
    ("ModernBERT", "modernbert", 8192, 50283, 8192),
    ("unknown type", "electra", 512, 0, 512),
]


@pytest.mark.parametrize(
    "name,model_type,positions,pad,window", PUBLISHED, ids=[p[0] for p in PUBLISHED]
)
def test_default_window_of_published_configs(name, model_type, positions, pad, window):
    config = {"model_type": model_type, "max_position_embeddings": positions, "pad_token_id": pad}
    assert models.default_max_length(config) == window


def test_every_tiny_family_resolves_to_the_tables_defaults(family_dirs):
    for name, fam in FAMILIES.items():
        for role in ("ner", "embed"):
            info = resolve_model(ModelSpec(family_dirs[name][role], role))
            assert info.model_type == fam.model_type
            assert info.max_length == fam.expected_window, (name, role)
            assert info.pooling == (None if role == "ner" else "mean")
    sap = resolve_model(ModelSpec(family_dirs["sapbert"]["embed"], "embed"))
    st = resolve_model(ModelSpec(family_dirs["st-cls"]["embed"], "embed"))
    assert (sap.pooling, st.pooling) == ("cls", "cls")
    over = resolve_model(ModelSpec(family_dirs["st-cls"]["embed"], "embed", 24, "mean"))
    assert (over.max_length, over.pooling) == (24, "mean")


# --- pooling --------------------------------------------------------------------------


def _folder(path: Path, config: dict, pooling: dict | None = None) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "bert", **config}))
    if pooling is not None:
        (path / "1_Pooling").mkdir()
        (path / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    return path


def test_pooling_follows_the_folder_then_sapbert_then_mean(tmp_path):
    cls = {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}
    mean = {"pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True}
    assert models.default_pooling(_folder(tmp_path / "a", {}, cls), "a") == "cls"
    # a declared pooling wins even over a SapBERT name
    assert models.default_pooling(_folder(tmp_path / "sapbert-st", {}, mean), "x") == "mean"
    assert models.default_pooling(_folder(tmp_path / "SapBERT-x", {}), "x") == "cls"
    named = _folder(tmp_path / "m1", {"_name_or_path": "cambridgeltl/SapBERT-from-PubMedBERT"})
    assert models.default_pooling(named, "s3://bucket/m1") == "cls"
    pulled = _folder(tmp_path / "m2", {})
    (pulled / "_provenance.json").write_text(json.dumps({"source": "org/SapBERT-UMLS"}))
    assert models.default_pooling(pulled, "s3://bucket/m2") == "cls"
    assert models.default_pooling(_folder(tmp_path / "plain", {}), "plain") == "mean"
    maxed = _folder(tmp_path / "max", {}, {"pooling_mode_max_tokens": True})
    with pytest.raises(ValueError, match="'max' pooling"):
        models.default_pooling(maxed, "max")


def test_pooling_of_folders_sentence_transformers_saved(family_dirs, tmp_path):
    st = pytest.importorskip("sentence_transformers")
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    src = family_dirs["bert-uncased"]["embed"]
    for mode in ("cls", "mean", "max"):
        modules = [Transformer(src), Pooling(32, pooling_mode=mode)]
        st.SentenceTransformer(modules=modules, device="cpu").save(str(tmp_path / mode))
    assert models.default_pooling(tmp_path / "cls", "cls") == "cls"
    assert models.default_pooling(tmp_path / "mean", "mean") == "mean"
    with pytest.raises(ValueError, match="--pooling"):
        models.default_pooling(tmp_path / "max", "max")


# --- offsets of every tokenizer kind: the context-free oracle ---------------------------

ORACLES = {  # tokenizer kind → (tokenizer, RoBERTa embeddings?, position table, window)
    "byte-level BPE (RoBERTa, trimmed offsets)": (roberta_tokenizer, True, 34, 32),
    "byte-level BPE (ModernBERT, untrimmed offsets)": (modernbert_tokenizer, False, 32, 32),
    "SentencePiece (BigBird)": (sentencepiece_tokenizer, False, 32, 32),
}


@pytest.fixture(scope="module")
def oracle_dirs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("oracles")
    return {
        kind: str(write_oracle(root / f"o{i}", tok, roberta, positions))
        for i, (kind, (tok, roberta, positions, _)) in enumerate(ORACLES.items())
    }


@pytest.mark.parametrize("kind", list(ORACLES))
@pytest.mark.parametrize("max_length,stride", [(None, 8), (11, 3)])
def test_oracle_long_document_equals_its_pieces(oracle_dirs, kind, max_length, stride):
    """A long document in many windows gives exactly the entities of its pieces alone;
    at the default window (the whole position table less RoBERTa's offset) too."""
    path = oracle_dirs[kind]
    window = max_length or models.default_max_length(models.read_config(Path(path)))
    assert max_length or window == ORACLES[kind][3]
    rng = random.Random(window + stride)
    pieces = ["the " + corpus_sentence(rng, rng.randint(4, 12)) + " ." for _ in range(30)]
    long_text = " ".join(pieces)
    whole = run_ner(path, [long_text], window, stride)
    alone = run_ner(path, pieces, max_length=window, stride=stride)
    expected, offset = [], 0
    for i, piece in enumerate(pieces):
        expected += [
            (r["start"] + offset, r["end"] + offset, r["label"])
            for r in alone
            if r["doc_id"] == f"d{i}"
        ]
        offset += len(piece) + 1
    assert [(r["start"], r["end"], r["label"]) for r in whole] == expected
    assert len(expected) > 10
    check_entities(whole, {"d0": long_text})


# --- each family in process: entities, windows, batching -------------------------------


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_in_process_entities_and_windows(family_dirs, name):
    texts = family_texts(5)
    window = FAMILIES[name].expected_window
    ents = run_ner(family_dirs[name]["ner"], texts, window, 16, batch_tokens=2 * window)
    by_id = {f"d{i}": t for i, t in enumerate(texts)}
    check_entities(ents, by_id)
    out = embed(family_dirs[name]["embed"], texts, window, 16, batch_tokens=2 * window)
    chunks = embedding_rows(out, 32).to_pylist()
    check_coverage(chunks, by_id)
    assert max(c["n_tokens"] for c in chunks) == window - 2  # full windows are used
    assert sum(c["doc_id"] == "d0" for c in chunks) > 1


@pytest.mark.parametrize("name", ["longformer", "bigbird", "modernbert"])
def test_a_text_embedded_alone_equals_it_in_any_batch(family_dirs, name):
    texts = family_texts(6)
    window = FAMILIES[name].expected_window
    path = family_dirs[name]["embed"]
    together = embed(path, texts, window, 16, batch_tokens=3 * window)
    for i in (0, 1, 3):
        alone = embed(path, [texts[i]], window, 16, batch_tokens=window)
        np.testing.assert_allclose(
            alone.column(S.DOC_EMBEDDING).to_pylist()[0],
            together.column(S.DOC_EMBEDDING).to_pylist()[i],
            atol=2e-5,
        )


def test_bigbird_keeps_block_sparse_attention_after_a_short_pass(family_dirs):
    """BigBird turns itself to full attention for good at its first short input; every
    pass is padded to the full window, so what came before never changes a result."""
    path = family_dirs["bigbird"]["embed"]
    long_text = family_texts(7)[0]

    def vectors(stage: EmbedStage, texts: list[str]) -> list:
        out = stage(Tokenize.of_model("embed", path)(docs(texts)))
        return out.column(S.DOC_EMBEDDING).to_pylist()

    fresh = EmbedStage(
        EmbedSettings(path, 1024, 16, "float32", pooling="mean"), EncoderScheduling(4096)
    )
    want = vectors(fresh, [long_text])[0]
    stage = EmbedStage(
        EmbedSettings(path, 1024, 16, "float32", pooling="mean"), EncoderScheduling(4096)
    )
    vectors(stage, ["heparin"])
    assert stage.model.base_model.attention_type == "block_sparse"
    np.testing.assert_allclose(vectors(stage, [long_text])[0], want, atol=1e-6)


def test_longformer_forward_has_global_attention_on_the_first_token(family_dirs):
    path = Path(family_dirs["longformer"]["embed"])
    ids = torch.tensor([[0, 50, 60, 70, 80, 90, 2]])
    mask = torch.ones_like(ids)
    plain = models.load_model(path, "embed")
    glob = torch.zeros_like(ids)
    glob[:, 0] = 1
    with torch.inference_mode():
        want = plain(input_ids=ids, attention_mask=mask, global_attention_mask=glob)
        local = plain(input_ids=ids, attention_mask=mask)
        enc = Encoder(
            models.load_model(path, "embed"), [0], [2], 1, 64, "float32", EncoderScheduling(512)
        )
        got = enc.model(input_ids=ids.to(enc.device), attention_mask=mask.to(enc.device))
    assert enc.multiple_of % 32 == 0  # its own padding to the attention window is budgeted
    got = got.last_hidden_state.cpu()
    torch.testing.assert_close(got, want.last_hidden_state, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(got, local.last_hidden_state, atol=1e-3)


def test_bfloat16_puts_the_weights_in_bfloat16(family_dirs):
    model = models.load_model(Path(family_dirs["gatortron"]["embed"]), "embed")
    enc = Encoder(model, [2], [3], 0, 64, "bfloat16", EncoderScheduling(512))
    assert {p.dtype for p in enc.model.parameters()} == {torch.bfloat16}


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(FAMILIES))
def test_bfloat16_on_gpu_agrees_with_float32(family_dirs, name):
    """bf16 weights under autocast on the GPU: every family's forward (Longformer's global
    attention, BigBird's block-sparse passes, ModernBERT's local attention) runs and
    gives what float32 gives, to bf16 precision."""
    texts = family_texts(9)
    window = FAMILIES[name].expected_window
    path = family_dirs[name]["embed"]
    batch = Tokenize.of_model("embed", path)(docs(texts))
    f32 = EmbedStage(
        EmbedSettings(path, window, 16, "float32", pooling="mean"), EncoderScheduling(4 * window)
    )
    b16 = EmbedStage(
        EmbedSettings(path, window, 16, "auto", pooling="mean"), EncoderScheduling(4 * window)
    )
    param = next(b16.model.parameters())
    assert param.is_cuda and param.dtype == torch.bfloat16
    want = np.array(f32(batch).column(S.DOC_EMBEDDING).to_pylist())
    got = np.array(b16(batch).column(S.DOC_EMBEDDING).to_pylist())
    assert (want * got).sum(axis=1).min() > 0.99
    ner_path = family_dirs[name]["ner"]
    ner = NerStage(
        NerSettings(ner_path, window, 16, "auto", aggregation="first"),
        EncoderScheduling(4 * window),
    )
    ents = entity_rows(ner(Tokenize.of_model("ner", ner_path)(docs(texts)))).to_pylist()
    check_entities(ents, {f"d{i}": t for i, t in enumerate(texts)})


# --- the whole job, one run per pair of families ----------------------------------------

JOB_RUNS = [  # NER family, embedding family, extra flags, expected (ner, embed) window, pooling
    ("bert-cased", "sapbert", [], (64, 64), "cls"),
    ("gatortron", "st-cls", ["--max-length", "48", "--pooling", "mean"], (48, 48), "mean"),
    ("roberta", "longformer", [], (64, 1024), "mean"),
    ("modernbert", "bigbird", [], (1024, 1024), "mean"),
]


@pytest.mark.slow
@pytest.mark.parametrize("ner,emb,flags,windows,pooling", JOB_RUNS, ids=[r[0] for r in JOB_RUNS])
def test_annotate_job_on_each_family(family_dirs, tmp_path, ner, emb, flags, windows, pooling):
    texts = family_texts(8)
    ids = [f"doc-{i}" for i in range(len(texts))]
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"doc_id": ids, "text": texts}), tmp_path / "in" / "p.parquet")
    out = str(tmp_path / "out")
    res = run_job(
        *["--input", str(tmp_path / "in"), "--output", out, "--stride", "16"],
        *["--ner-model", family_dirs[ner]["ner"], "--embed-model", family_dirs[emb]["embed"]],
        *flags,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    by_id = dict(zip(ids, texts))
    check_entities(read_table(out, "entities").to_pylist(), by_id)
    chunks = read_table(out, "embeddings").to_pylist()
    check_coverage(chunks, by_id)
    assert max(c["n_tokens"] for c in chunks) == windows[1] - 2
    n_chunks = {d["doc_id"]: d["n_chunks"] for d in read_table(out, "documents").to_pylist()}
    assert n_chunks["doc-0"] > 1  # longer than the window
    run = read_run(out)
    assert (run["models"]["ner"]["max_length"], run["models"]["embed"]["max_length"]) == windows
    assert run["models"]["embed"]["pooling"] == pooling
    for role, path in (("ner", family_dirs[ner]["ner"]), ("embed", family_dirs[emb]["embed"])):
        assert run["models"][role]["weights_sha256"] == models.weights_hash(Path(path))
    if flags:
        assert run["config"]["embed"]["max_length"] == int(flags[1])
        assert run["config"]["embed"]["pooling"] == flags[3]
