"""Retrieval on hand-built dictionaries and vectors: exact names first, labels respected,
ties broken the same way whatever the order, blocks merged as one search."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from pipeline.linking import retrieval as R
from pipeline.linking.dictionary import from_table


def _unit(*v: float) -> np.ndarray:
    a = np.asarray(v, np.float32)
    return a / np.linalg.norm(a)


def _index(rows: list[tuple[str, str, str | None, np.ndarray]]) -> R.LinkIndex:
    """An index whose name vectors are the given ones (rows in any order)."""
    d = from_table(
        pa.table({"concept_id": [r[0] for r in rows], "name": [r[1] for r in rows],
                  "label": pa.array([r[2] for r in rows], pa.string())}), "test",
    )  # fmt: skip
    by_name = {(r[0], r[1]): r[3] for r in rows}
    vectors = np.stack([by_name[(c, n)] for c, n in zip(d.concept_ids, d.names)])
    return R.LinkIndex.build(d, vectors.astype(np.float16))


def _search(index, queries, mentions, labels, k=3, w=0.0):
    vectors = torch.from_numpy(index.vectors)
    found = R.search(index, vectors, np.stack(queries), mentions, labels, k, w)
    return [[(c.concept_id, c.name, round(c.score, 3), c.exact) for c in f] for f in found]


def test_an_exact_normalised_name_match_ranks_first_and_scores_one():
    index = _index([
        ("D1", "heart attack", None, _unit(1, 0, 0)),
        ("D2", "heart attacks", None, _unit(0, 1, 0)),
    ])  # fmt: skip
    # the mention's vector is D2's: dense search alone would choose D2
    got = _search(index, [_unit(0, 1, 0)], ["Heart-Attack"], [None])
    assert got[0][0] == ("D1", "heart attack", 1.0, True)
    assert got[0][1] == ("D2", "heart attacks", 1.0, False)  # cosine 1 with its vector


def test_concepts_sharing_an_exact_name_are_ordered_by_how_often_the_dictionary_gives_it():
    rows = [
        ("C1", "C9 deficiency", None, _unit(1, 0)),
        ("C2", "C9 deficiency", None, _unit(0, 1)),
        ("C2", "c9 deficiency", None, _unit(0, 1)),
        ("C2", "C9 deficiency", None, _unit(0, 1)),
    ]
    d = from_table(
        pa.table({"concept_id": [r[0] for r in rows], "name": [r[1] for r in rows]}), "t"
    )
    by_pair = {(r[0], r[1]): r[3] for r in rows}
    vectors = np.stack([by_pair[(c, n)] for c, n in zip(d.concept_ids, d.names)])
    index = R.LinkIndex.build(d, vectors.astype(np.float16))
    # the mention's vector is C1's, but C2 gives the name three times
    got = _search(index, [_unit(1, 0)], ["C9 deficiency"], [None])[0]
    assert [(c[0], c[3]) for c in got] == [("C2", True), ("C1", True)]


def test_candidates_of_another_known_label_are_never_chosen():
    index = _index([
        ("C1", "cisplatin", "Chemical", _unit(1, 0, 0)),
        ("D1", "nephrotoxicity", "Disease", _unit(0.6, 0.8, 0)),
    ])  # fmt: skip
    q = _unit(1, 0, 0)
    disease = _search(index, [q], ["cisplatin"], ["Disease"])  # exact name, other label
    assert [c[0] for c in disease[0]] == ["D1"]
    assert disease[0][0][3] is False
    # case-insensitive labels; a label the dictionary does not know restricts nothing
    assert [c[0] for c in _search(index, [q], ["x"], ["chemical"])[0]] == ["C1"]
    assert [c[0] for c in _search(index, [q], ["x"], ["Gene"])[0]] == ["C1", "D1"]
    assert [c[0] for c in _search(index, [q], ["x"], [None])[0]] == ["C1", "D1"]


def test_names_without_a_label_match_entities_of_any_label():
    index = _index([("X1", "pain", None, _unit(1, 0)), ("C1", "salt", "Chemical", _unit(0, 1)),
                    ("D1", "flu", "Disease", _unit(-1, 0))])  # fmt: skip
    got = _search(index, [_unit(1, 0)], ["ache"], ["Disease"])[0]
    assert [c[0] for c in got] == ["X1", "D1"]


def test_each_concept_appears_once_with_its_best_name():
    index = _index([
        ("D1", "asthma", None, _unit(1, 0, 0)),
        ("D1", "bronchial asthma", None, _unit(0.9, 0.1, 0)),
        ("D1", "asthmatic", None, _unit(0.95, 0.05, 0)),
        ("D2", "wheeze", None, _unit(0.5, 0.5, 0)),
    ])  # fmt: skip
    got = _search(index, [_unit(1, 0.01, 0)], ["something"], [None], k=5)[0]
    assert [(c[0], c[1]) for c in got] == [("D1", "asthma"), ("D2", "wheeze")]
    assert got[0][2] > got[1][2]


def test_ties_break_by_concept_id_then_name_whatever_the_dictionary_order():
    rows = [("D9", "b", None, _unit(1, 0)), ("D3", "a", None, _unit(1, 0)),
            ("D5", "c", None, _unit(1, 0))]  # fmt: skip
    for order in (rows, rows[::-1], rows[1:] + rows[:1]):
        got = _search(_index(order), [_unit(1, 0)], ["zzz"], [None], k=3)[0]
        assert [c[0] for c in got] == ["D3", "D5", "D9"]


def test_the_ngram_score_finds_a_misspelling_the_vectors_miss():
    index = _index([
        ("D1", "neurofibromatosis", None, _unit(1, 0)),
        ("D2", "tuberculosis", None, _unit(0, 1)),
    ])  # fmt: skip
    q, mention = _unit(0.2, 1), "neurofibromatoses"
    assert _search(index, [q], [mention], [None], k=1, w=0.0)[0][0][0] == "D2"
    assert _search(index, [q], [mention], [None], k=1, w=2.0)[0][0][0] == "D1"
    # combined scores stay within [-1, 1]: (dense + w * ngram) / (1 + w)
    assert all(-1 <= c[2] <= 1 for c in _search(index, [q], [mention], [None], w=2.0)[0])


def test_a_search_over_many_blocks_equals_one_over_a_single_block(monkeypatch):
    rng = np.random.default_rng(0)
    names = [f"name {i} {'abc'[i % 3]}" for i in range(300)]
    rows = [(f"C{i // 3:03d}", n, None, _unit(*rng.normal(size=8))) for i, n in enumerate(names)]
    index = _index(rows)
    queries = [_unit(*rng.normal(size=8)) for _ in range(7)]
    mentions = ["name 5 c", "abc", "name", "x", "name 17", "c", "name 299 c"]
    one = _search(index, queries, mentions, [None] * 7, k=4, w=0.5)
    monkeypatch.setattr(R, "BLOCK_NAMES", 37)
    monkeypatch.setattr(R, "MENTIONS_PER_PASS", 3)
    assert _search(index, queries, mentions, [None] * 7, k=4, w=0.5) == one
    assert one[0][0][:2] == ("C001", "name 5 c") and one[0][0][3] is True


def test_no_mentions_and_fewer_concepts_than_k():
    index = _index([("D1", "gout", None, _unit(1, 0))])
    assert _search(index, [_unit(1, 0)], [" -- "], [None]) == [[]]  # nothing to link by
    assert R.search(index, torch.from_numpy(index.vectors), np.zeros((0, 2)), [], [], 5) == []
    assert len(_search(index, [_unit(0, 1)], ["flu"], [None], k=5)[0]) == 1


def test_vectors_and_names_must_agree():
    d = from_table(pa.table({"concept_id": ["D1"], "name": ["gout"]}), "t")
    with pytest.raises(ValueError, match="2 vectors for 1 names"):
        R.LinkIndex.build(d, np.zeros((2, 4), np.float16))
