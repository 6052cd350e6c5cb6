"""Gold spans → token BIO labels → spans, through the annotate job's tokenization."""

from __future__ import annotations

import random
import unicodedata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from support.family_models import roberta_tokenizer
from support.tiny_models import CHEM_B, CHEM_I, DISEASE_B, DISEASE_I, PLAIN, write_tokenizer

from pipeline import schemas as S
from pipeline.core.windows import WindowPlan, window_starts
from pipeline.sample import defaults
from pipeline.stages.tokenize import column_arrays
from pipeline.training.alignment import (
    IGNORE,
    align_spans,
    bio_labels,
    labels_to_spans,
    window_labels,
)
from pipeline.training.data import ROLE, tokenize_docs

LABELS = bio_labels(["Disease", "Chemical"])
LABEL2ID = {v: k for k, v in enumerate(LABELS)}
ID2LABEL = dict(enumerate(LABELS))


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tokenizers")
    write_tokenizer(root / "uncased", lowercase=True)
    write_tokenizer(root / "cased", lowercase=False)
    return {
        "uncased": str(root / "uncased"),
        "cased": str(root / "cased"),
        "minilm": defaults.default_embed_model(),
    }


@pytest.fixture(scope="module")
def roberta(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A RoBERTa-style byte-level BPE tokenizer (a lone space is a token of no width)."""
    dest = tmp_path_factory.mktemp("roberta")
    roberta_tokenizer(dest)
    return str(dest)


def tokenize_all(texts: list[str], model_dir: str) -> list[tuple[np.ndarray, ...]]:
    """Per text: character starts, ends and word ids of its tokens, as the job tokenizes."""
    docs = pa.table({S.DOC_ID: [str(i) for i in range(len(texts))], S.TEXT: texts})
    batch = tokenize_docs(docs, model_dir, False)
    cols = [
        column_arrays(batch, S.tokens_column(ROLE, n))
        for n in (S.TOKEN_STARTS, S.TOKEN_ENDS, S.WORD_IDS)
    ]
    return list(zip(*cols))


def tokens_of(text: str, model_dir: str) -> tuple[np.ndarray, ...]:
    return tokenize_all([text], model_dir)[0]


def random_doc(rng: random.Random, n_words: int) -> tuple[str, list[tuple]]:
    """Text of vocab words (some unknown to the vocab, some split into subwords, some
    capitalized) with gold spans over whole words, built by appending pieces and recording
    where entities land."""
    text, spans = "", []
    seps = [" ", "  ", "\n", " , ", " ( ", " ) ", "; "]
    for _ in range(n_words):
        if text:
            text += rng.choice(seps)
        r = rng.random()
        if r < 0.2:
            words, label = [rng.choice(DISEASE_B)], "Disease"
            words += [rng.choice(DISEASE_I)] * (rng.random() < 0.4)
        elif r < 0.35:
            words, label = [rng.choice(CHEM_B)], "Chemical"
            words += [rng.choice(CHEM_I)] * (rng.random() < 0.4)
        else:
            words, label = [rng.choice(PLAIN + ["zzyzx", "asthmas", "heparinol"])], None
        if label and rng.random() < 0.3:
            words[0] += rng.choice(["s", "itis"])  # a second WordPiece (##s, ##itis)
        if rng.random() < 0.3:
            words[0] = words[0].capitalize()
        piece = " ".join(words)
        if label:
            spans.append((len(text), len(text) + len(piece), label))
        text += piece
    return text, spans


def as_tuples(spans) -> list[tuple]:
    return list(zip(spans.start.tolist(), spans.end.tolist(), spans.label))


def test_bio_labels_are_sorted_with_outside_first() -> None:
    assert bio_labels(["Disease", "Chemical", "Disease"]) == [
        "O",
        "B-Chemical",
        "I-Chemical",
        "B-Disease",
        "I-Disease",
    ]


@pytest.mark.parametrize("name", ["uncased", "cased"])
def test_round_trip_random_documents(tokenizers: dict[str, str], name: str) -> None:
    rng = random.Random(7)
    docs = [random_doc(rng, rng.randint(1, 40)) for _ in range(40)]
    tokens = tokenize_all([text for text, _ in docs], tokenizers[name])
    for (text, gold), (starts, ends, words) in zip(docs, tokens):
        labels, report = align_spans(
            starts,
            ends,
            words,
            [s for s, _, _ in gold],
            [e for _, e, _ in gold],
            [t for _, _, t in gold],
            LABEL2ID,
        )
        assert report.aligned == report.n_spans == len(gold)
        assert report.boundary_mismatch == report.word_mismatch == 0
        back = labels_to_spans(labels, words, starts, ends, ID2LABEL, text)
        assert as_tuples(back) == gold


def test_round_trip_minilm_punctuation_subwords_and_accents(tokenizers: dict[str, str]) -> None:
    text = (
        "Acetylsalicylic acid-induced hepatotoxicity in Sprague-Dawley rats; "
        "5-fluorouracil (5-FU) and CisPlatin.\nSjögren syndrome  with type 2 diabetes mellitus."
    )
    gold = []
    for mention, label in [
        ("Acetylsalicylic acid", "Chemical"),
        ("hepatotoxicity", "Disease"),
        ("5-fluorouracil", "Chemical"),
        ("5-FU", "Chemical"),
        ("CisPlatin", "Chemical"),
        ("Sjögren syndrome", "Disease"),
        ("type 2 diabetes mellitus", "Disease"),
    ]:
        s = text.index(mention)
        gold.append((s, s + len(mention), label))
    starts, ends, words = tokens_of(text, tokenizers["minilm"])
    labels, report = align_spans(
        starts,
        ends,
        words,
        [g[0] for g in gold],
        [g[1] for g in gold],
        [g[2] for g in gold],
        LABEL2ID,
    )
    assert report.aligned == len(gold) and report.boundary_mismatch == 0
    # Multi-token spans: B- on the first token only.
    first = int(np.flatnonzero(starts == gold[0][0])[0])
    assert LABELS[labels[first]] == "B-Chemical" and LABELS[labels[first + 1]] == "I-Chemical"
    assert as_tuples(labels_to_spans(labels, words, starts, ends, ID2LABEL, text)) == gold


@pytest.mark.parametrize("name", ["uncased", "cased", "minilm"])
def test_windows_cut_spans_and_stitch_back(tokenizers: dict[str, str], name: str) -> None:
    rng = random.Random(11)
    n_prefix, n_suffix = 1, 1
    cut_seen = 0
    docs = [random_doc(rng, rng.randint(20, 60)) for _ in range(20)]
    tokens = tokenize_all([text for text, _ in docs], tokenizers[name])
    for (text, gold), (starts, ends, words) in zip(docs, tokens):
        labels, _ = align_spans(
            starts,
            ends,
            words,
            [g[0] for g in gold],
            [g[1] for g in gold],
            [g[2] for g in gold],
            LABEL2ID,
        )
        window, n = 7, len(starts)
        win_starts = window_starts(n, window, stride=3)
        windows = []
        for s in win_starts.tolist():
            length = min(s + window, n) - s
            w = window_labels(labels, s, length, n_prefix, n_suffix)
            assert w[0] == w[-1] == IGNORE and len(w) == length + 2
            first = LABELS[w[n_prefix]]
            if s > 0 and labels[s - 1] != 0 and first.startswith("I-"):
                cut_seen += 1  # a span runs in from the previous window: it starts with I-
            if first != "O":
                inside = any(gs < ends[s] and ge > starts[s] for gs, ge, _ in gold)
                assert inside
            windows.append(w)
        # Stitch as NerStage does: each token from its owner window.
        plan = WindowPlan.build([n], window, stride=3)
        lo, hi = plan.owned()
        stitched = np.concatenate(
            [
                windows[k][n_prefix + a - s : n_prefix + b - s]
                for k, (a, b, s) in enumerate(zip(lo, hi, win_starts))
            ]
        )
        assert (stitched == labels).all()
        back = labels_to_spans(stitched, words, starts, ends, ID2LABEL, text)
        assert as_tuples(back) == gold
    assert cut_seen > 0


def test_span_cut_by_window_edge_continues_with_inside_label(tokenizers: dict[str, str]) -> None:
    text = "the patient with diabetes mellitus"
    starts, ends, words = tokens_of(text, tokenizers["uncased"])
    s = text.index("diabetes")
    labels, _ = align_spans(starts, ends, words, [s], [len(text)], ["Disease"], LABEL2ID)
    win = window_labels(labels, 4, 1, 1, 1)  # a window holding "mellitus" alone
    assert [LABELS[i] if i != IGNORE else None for i in win] == [None, "I-Disease", None]


def test_unalignable_and_mismatched_spans_are_counted(tokenizers: dict[str, str]) -> None:
    text = "aspirin   and hepatitis with asthmas"
    starts, ends, words = tokens_of(text, tokenizers["uncased"])
    h, a = text.index("hepatitis"), text.index("asthmas")
    cases = [
        (8, 10, "Chemical"),  # whitespace only: unaligned
        (3, 3, "Chemical"),  # empty: unaligned
        (100, 104, "Chemical"),  # past the text: unaligned
        (h, h + 5, "Disease"),  # ends inside the token "hepatitis": boundary mismatch
        (0, 9, "Chemical"),  # "aspirin  " ends on whitespace: boundary mismatch
        (a, a + 6, "Disease"),  # "asthma" of asthma ##s: token edges, but splits a word
        (h + 2, h + 9, "Disease"),  # shares "hepatitis" with an earlier span: conflict
        (10, 13, "Procedure"),  # a type the model does not have
    ]
    labels, report = align_spans(
        starts,
        ends,
        words,
        [c[0] for c in cases],
        [c[1] for c in cases],
        [c[2] for c in cases],
        LABEL2ID,
    )
    got = report.to_dict()
    assert got == {
        "n_spans": 8,
        "aligned": 3,
        "unaligned": 3,
        "boundary_mismatch": 2,
        "word_mismatch": 1,
        "overlap_conflict": 1,
        "unknown_label": 1,
        "no_document": 0,
    }
    # Straddling tokens count as inside; the conflicting span does not relabel them.
    tok = {int(s): LABELS[lab] for s, lab in zip(starts, labels)}
    assert tok[0] == "B-Chemical" and tok[h] == "B-Disease" and tok[a] == "B-Disease"
    assert tok[text.index("and")] == "O"


def test_tokenize_docs_matches_the_tokenizer_offsets(tokenizers: dict[str, str]) -> None:
    from pipeline.models.loading import load_tokenizer

    text = "Heparin  sodium\nfor sepsis"
    enc = load_tokenizer(Path(tokenizers["cased"]))(
        text, add_special_tokens=False, return_offsets_mapping=True
    )
    starts, ends, _ = tokens_of(text, tokenizers["cased"])
    assert [tuple(o) for o in enc["offset_mapping"]] == list(zip(starts.tolist(), ends.tolist()))


def test_zero_width_token_inside_a_span_is_labelled_inside(roberta: str) -> None:
    # The second of two spaces is a token of its own, with no width: it lies between
    # "diabetes" and "mellitus", so it is inside the disease like them.
    text = "diabetes  mellitus here"
    starts, ends, words = tokens_of(text, roberta)
    here = int(np.flatnonzero(starts == text.index("here"))[0])
    zero = np.flatnonzero(starts == ends)
    assert len(zero) and (zero < here).all()  # the case under test exists
    labels, report = align_spans(starts, ends, words, [0], [18], ["Disease"], LABEL2ID)
    names = [LABELS[i] for i in labels]
    assert names == ["B-Disease"] + ["I-Disease"] * (here - 1) + ["O"] * (len(labels) - here)
    assert report.aligned == 1
    back = labels_to_spans(labels, words, starts, ends, ID2LABEL, text)
    assert as_tuples(back) == [(0, 18, "Disease")]


def test_round_trip_keeps_a_final_combining_mark(tokenizers: dict[str, str]) -> None:
    # MiniLM's uncased WordPiece strips accents: in NFD text its token "barre" ends before
    # the U+0301 of "é". The disease runs to the comma, mark included.
    text = unicodedata.normalize("NFD", "After Guillain-Barré, aspirin.")
    s, e = text.index("Guillain"), text.index(",")
    starts, ends, words = tokens_of(text, tokenizers["minilm"])
    assert e not in ends.tolist()  # no token ends where the entity does
    labels, report = align_spans(starts, ends, words, [s], [e], ["Disease"], LABEL2ID)
    assert report.aligned == 1
    back = labels_to_spans(labels, words, starts, ends, ID2LABEL, text)
    assert as_tuples(back) == [(s, e, "Disease")]
