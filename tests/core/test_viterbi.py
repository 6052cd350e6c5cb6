"""Constrained decoding against brute force over every label sequence."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pipeline.core.spans import LabelScheme
from pipeline.core.viterbi import transitions, viterbi, viterbi_documents

SCHEMES = {
    "bio": ["O", "B-Chem", "I-Chem", "B-Dis", "I-Dis"],
    "bioes": ["O", "B-Dis", "I-Dis", "E-Dis", "S-Dis"],
    "bilou": ["O", "B-X", "I-X", "L-X", "U-X", "B-Y", "I-Y", "L-Y", "U-Y"],
    "bare": ["O", "B", "I"],
    "io": ["O", "Chem", "Dis"],
}


def _allowed_by_rules(names: list[str], seq: tuple[int, ...]) -> bool:
    """The scheme's rules written independently of the code under test, on label names."""

    def parse(name: str) -> tuple[str, str]:
        if name == "O":
            return "O", ""
        if "-" in name:
            p, t = name.split("-", 1)
            return p, t
        return (name, "") if name in ("B", "I") else ("IO", name)

    closing = any(parse(n)[0] in ("E", "L") for n in names)
    prev = ("O", "")
    for i in seq:
        p, t = parse(names[i])
        if p in ("I", "E", "L") and not (prev[0] in ("B", "I") and prev[1] == t):
            return False
        if closing and prev[0] in ("B", "I") and not (p in ("I", "E", "L") and t == prev[1]):
            return False
        prev = (p, t)
    return not (closing and prev[0] in ("B", "I"))


def _brute(names: list[str], probs: np.ndarray) -> tuple[float, tuple[int, ...]]:
    logp = np.log(np.maximum(probs.astype(np.float64), 1e-30))
    best: tuple[float, tuple[int, ...]] | None = None
    for seq in itertools.product(range(len(names)), repeat=len(probs)):
        if not _allowed_by_rules(names, seq):
            continue
        score = float(sum(logp[t, y] for t, y in enumerate(seq)))
        if best is None or score > best[0] + 1e-9:  # product order: lexicographic, first kept
            best = (score, seq)
    assert best is not None
    return best


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_viterbi_equals_brute_force_on_random_scores(name: str) -> None:
    names = SCHEMES[name]
    scheme = LabelScheme.from_id2label(dict(enumerate(names)))
    rng = np.random.default_rng(len(name))
    n_max = 5 if len(names) < 6 else 4
    for trial in range(60):
        n = int(rng.integers(1, n_max + 1))
        probs = rng.dirichlet(np.ones(len(names)) * 0.5, size=n).astype(np.float32)
        score, seq = _brute(names, probs)
        got = viterbi(probs, scheme)
        logp = np.log(np.maximum(probs.astype(np.float64), 1e-30))
        assert _allowed_by_rules(names, tuple(got.tolist())), (trial, got)
        assert float(logp[np.arange(n), got].sum()) == pytest.approx(score, abs=1e-9)
        assert tuple(got.tolist()) == seq


def test_ties_give_the_smallest_sequence_and_greedy_when_it_is_allowed() -> None:
    names = SCHEMES["bio"]
    scheme = LabelScheme.from_id2label(dict(enumerate(names)))
    # Exact ties (powers of two): O and B-Chem equally likely on both words.
    probs = np.array([[0.5, 0.5, 0, 0, 0], [0.25, 0.25, 0.25, 0.25, 0]], np.float32)
    assert tuple(viterbi(probs, scheme).tolist()) == _brute(names, probs)[1] == (0, 0)
    # A greedy I- after O is not allowed: the entity either opens one word earlier or the
    # I- becomes B-, whichever scores more.
    probs = np.array([[0.6, 0.3, 0.1, 0, 0], [0.1, 0.2, 0.7, 0, 0]], np.float32)
    assert viterbi(probs, scheme).tolist() == [1, 2]  # 0.3 * 0.7 > 0.6 * 0.2
    probs = np.array([[0.9, 0.05, 0.05, 0, 0], [0.1, 0.2, 0.7, 0, 0]], np.float32)
    assert viterbi(probs, scheme).tolist() == [0, 1]  # 0.9 * 0.2 > 0.05 * 0.7


def test_single_word_and_empty_documents() -> None:
    scheme = LabelScheme.from_id2label(dict(enumerate(SCHEMES["bioes"])))
    # One word: B- or I- would leave an entity open, E- has none to close.
    probs = np.array([[0.1, 0.4, 0.3, 0.15, 0.05]], np.float32)
    assert viterbi(probs, scheme).tolist() == [0]
    assert viterbi(np.zeros((0, 5), np.float32), scheme).tolist() == []


def test_documents_decoded_together_equal_one_by_one() -> None:
    names = SCHEMES["bioes"]
    scheme = LabelScheme.from_id2label(dict(enumerate(names)))
    rng = np.random.default_rng(3)
    lengths = [4, 0, 1, 7, 3, 0]
    docs = [rng.dirichlet(np.ones(5) * 0.3, size=k).astype(np.float32) for k in lengths]
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    together = viterbi_documents(np.concatenate(docs), bounds, scheme)
    alone = np.concatenate([viterbi(d, scheme) for d in docs])
    assert together.tolist() == alone.tolist()
    # An entity never runs across a document boundary: the first unit of each document
    # is not a continuation.
    start_ok, _, _ = transitions(scheme)
    assert all(start_ok[together[b]] for b, k in zip(bounds[:-1], lengths) if k)


def test_viterbi_decoding_keeps_a_multi_word_entity_whole() -> None:
    # "type 2 diabetes mellitus": greedy reads "2" as O (0.45 > 0.4) and cuts the
    # entity in two; the best allowed sequence keeps B I I I (0.45 * ... < 0.4 * ...).
    from pipeline.core.spans import TokenPredictions, decode_spans

    names = SCHEMES["bio"]
    scheme = LabelScheme.from_id2label(dict(enumerate(names)))
    text = "type 2 diabetes mellitus"
    probs = np.array(
        [
            [0.1, 0.0, 0.0, 0.8, 0.1],
            [0.45, 0.0, 0.0, 0.15, 0.4],
            [0.1, 0.0, 0.0, 0.1, 0.8],
            [0.1, 0.0, 0.0, 0.0, 0.9],
        ],
        np.float32,
    )
    starts, ends = np.array([0, 5, 7, 16]), np.array([4, 6, 15, 24])
    pred = TokenPredictions(probs.argmax(1), probs.max(1), np.arange(4), starts, ends, probs)
    greedy = decode_spans(pred, scheme, "first", text, "greedy")
    best = decode_spans(pred, scheme, "first", text, "viterbi")
    assert [(int(s), int(e)) for s, e in zip(greedy.start, greedy.end)] == [(0, 4), (7, 24)]
    assert [(int(s), int(e)) for s, e in zip(best.start, best.end)] == [(0, 24)]
    assert best.tags[int(best.tag[0])] == "Dis"
    np.testing.assert_allclose(best.score, [(0.8 + 0.4 + 0.8 + 0.9) / 4], rtol=1e-6)
    with pytest.raises(ValueError, match="needs full label probabilities"):
        decode_spans(TokenPredictions(pred.label, pred.score, pred.word_ids, starts, ends),
                     scheme, "first", text, "viterbi")  # fmt: skip
