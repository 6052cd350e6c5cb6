"""Stages in process (no Ray) on tiny models written by the tests."""

from __future__ import annotations

import random

import numpy as np
import pytest
from support.documents import docs, embed, run_ner, sentence
from transformers import pipeline as hf_pipeline

from pipeline import schemas as S
from pipeline.config import EmbedSettings, EncoderScheduling, NerSettings
from pipeline.stages.embed import EmbedStage
from pipeline.stages.ner import NerStage
from pipeline.stages.tokenize import Tokenize
from pipeline.stages.write import document_rows, embedding_rows


@pytest.mark.parametrize("aggregation", ["first", "average", "max", "simple"])
def test_parity_with_transformers_pipeline(model_dirs, aggregation):
    rng = random.Random(7)
    texts = [sentence(rng, rng.randint(3, 40)) for _ in range(25)]
    # greedy decoding is the pipeline's: each word its own most probable label
    ours = run_ner(model_dirs["random"], texts, aggregation=aggregation, decoding="greedy")
    pipe = hf_pipeline(
        "token-classification", model=model_dirs["random"], aggregation_strategy=aggregation
    )
    n_expected = 0
    for i, text in enumerate(texts):
        want = [(e["start"], e["end"], e["entity_group"], float(e["score"])) for e in pipe(text)]
        got = [
            (r["start"], r["end"], r["label"], r["score"]) for r in ours if r["doc_id"] == f"d{i}"
        ]
        assert [w[:3] for w in want] == [g[:3] for g in got], f"doc {i}"
        np.testing.assert_allclose([g[3] for g in got], [w[3] for w in want], rtol=1e-4)
        n_expected += len(want)
    assert n_expected > 20  # the random model does predict entities on these texts


@pytest.mark.parametrize("model", ["oracle", "oracle_cased"])
@pytest.mark.parametrize("max_length,stride", [(8, 2), (16, 5), (19, 9), (64, 128)])
def test_oracle_long_document_equals_its_pieces(model_dirs, model, max_length, stride):
    """The oracle's labels ignore context, so a long document annotated in many small
    windows must give exactly the entities of its sentences annotated alone."""
    rng = random.Random(max_length * 31 + stride)
    pieces = [sentence(rng, rng.randint(4, 12)) + " ." for _ in range(30)]
    long_text = " ".join(pieces)
    whole = run_ner(model_dirs[model], [long_text], max_length, stride)
    alone = run_ner(model_dirs[model], pieces, max_length=128)
    expected, offset = [], 0
    for i, piece in enumerate(pieces):
        for r in alone:
            if r["doc_id"] == f"d{i}":
                expected.append((r["start"] + offset, r["end"] + offset, r["label"]))
        offset += len(piece) + 1
    got = [(r["start"], r["end"], r["label"]) for r in whole]
    assert got == expected
    assert len(expected) > 10
    for r in whole:
        assert r["text"] == long_text[r["start"] : r["end"]]
        assert not r["text"][0].isspace() and not r["text"][-1].isspace()


def test_entities_at_window_edges_are_neither_cut_nor_duplicated(model_dirs):
    # "diabetes mellitus" repeated so that, with 6-token windows, entities straddle edges
    text = " ".join(["the diabetes mellitus and heparin sodium"] * 12)
    got = run_ner(model_dirs["oracle"], [text], max_length=8, stride=2)
    labels = [(r["text"], r["label"]) for r in got]
    assert labels == [("diabetes mellitus", "Disease"), ("heparin sodium", "Chemical")] * 12


def test_bad_documents_yield_no_entities_but_keep_their_rows(model_dirs):
    batch = Tokenize.of_model("ner", model_dirs["oracle"])(docs(["aspirin", "", None, "   "]))
    out = NerStage(
        NerSettings(model_dirs["oracle"], 32, 8, "float32", aggregation="first"),
        EncoderScheduling(512),
    )(batch)
    assert out.num_rows == 4
    assert out.column(S.STATUS_INTERNAL).to_pylist() == ["ok", "empty", "empty", "empty"]
    assert [len(e) for e in out.column(S.ENTITIES).to_pylist()] == [1, 0, 0, 0]


def test_ner_only_documents_count_the_ner_windows(model_dirs):
    # window of 8 with [CLS]/[SEP] = 6 content tokens, stride 2: windows start every 4
    # tokens and the last one ends at the document's end, so n > 6 tokens take
    # ceil((n - 6) / 4) + 1 windows, a shorter document one, an empty one none.
    texts = ["aspirin", "", " ".join(["the diabetes mellitus"] * 7), "heparin " * 9]
    batch = Tokenize.of_model("ner", model_dirs["oracle"])(docs(texts))
    out = NerStage(
        NerSettings(model_dirs["oracle"], 8, 2, "float32", aggregation="first"),
        EncoderScheduling(512),
    )(batch)
    rows = document_rows(out, "ner", None)
    n_tokens = rows.column(S.N_TOKENS).to_pylist()
    want = [0 if n == 0 else 1 if n <= 6 else -(-(n - 6) // 4) + 1 for n in n_tokens]
    assert max(n_tokens) > 12  # some documents need several windows
    assert rows.column(S.N_CHUNKS).to_pylist() == want


def test_a_text_embedded_alone_equals_the_same_text_in_a_padded_batch(model_dirs):
    rng = random.Random(2)
    texts = [sentence(rng, rng.randint(2, 60)) for _ in range(12)]
    together = embed(model_dirs["encoder"], texts).column(S.DOC_EMBEDDING).to_pylist()
    for i in (0, 5, 11):
        alone = embed(model_dirs["encoder"], [texts[i]]).column(S.DOC_EMBEDDING).to_pylist()[0]
        np.testing.assert_allclose(alone, together[i], atol=1e-5)


def test_document_vector_is_the_token_weighted_mean_of_windows(model_dirs):
    rng = random.Random(4)
    text = sentence(rng, 80)
    out = embed(model_dirs["encoder"], [text], max_length=16, stride=4)
    # un-normalised window vectors, recomputed independently through the stage API
    stage = EmbedStage(
        EmbedSettings(model_dirs["encoder"], 16, 4, "float32", pooling="mean", normalize=False),
        EncoderScheduling(512),
    )
    raw = stage(Tokenize.of_model("embed", model_dirs["encoder"])(docs([text])))
    chunks = embedding_rows(raw, 32).to_pylist()
    assert len(chunks) > 3
    vecs = np.array([c["embedding"] for c in chunks])
    weights = np.array([c["n_tokens"] for c in chunks], float)
    want = (vecs * weights[:, None]).sum(0) / weights.sum()
    want /= np.linalg.norm(want)
    np.testing.assert_allclose(out.column(S.DOC_EMBEDDING).to_pylist()[0], want, atol=1e-5)
    # windows cover the text: first starts at 0, last ends at the last token's end
    assert chunks[0]["start"] == 0 and chunks[-1]["end"] == len(text.rstrip())
    assert [c["chunk_index"] for c in chunks] == list(range(len(chunks)))


def test_cls_pooling_differs_from_mean(model_dirs):
    text = ["the patient reports chest pain"]
    mean = embed(model_dirs["encoder"], text).column(S.DOC_EMBEDDING).to_pylist()[0]
    cls = embed(model_dirs["encoder"], text, pooling="cls").column(S.DOC_EMBEDDING).to_pylist()[0]
    assert np.linalg.norm(np.array(mean) - np.array(cls)) > 1e-3


def test_minilm_matches_sentence_transformers():
    """The real all-MiniLM-L6-v2 weights: our vectors equal sentence-transformers' own
    for texts that fit one window (its pooling and normalisation are read from the folder)."""
    st = pytest.importorskip("sentence_transformers")
    from pipeline.models.loading import default_pooling
    from pipeline.sample.defaults import default_embed_model

    path = default_embed_model()
    texts = [
        "Metformin is first-line therapy for type 2 diabetes mellitus.",
        "Cisplatin-induced nephrotoxicity was observed in 12% of patients.",
        "The patient denies chest pain, fever or cough.",
    ]
    pooling = default_pooling(__import__("pathlib").Path(path), path)
    assert pooling == "mean"
    ours = np.array(
        embed(path, texts, max_length=256, pooling=pooling).column(S.DOC_EMBEDDING).to_pylist()
    )
    ref = st.SentenceTransformer(path, device="cpu").encode(texts, normalize_embeddings=True)
    cos = (ours * ref).sum(axis=1)
    assert cos.min() >= 0.999
