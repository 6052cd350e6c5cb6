"""Span decoding on hand-built predictions (no model)."""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest

from pipeline.core.spans import (
    WHITESPACE,
    LabelScheme,
    TokenPredictions,
    aggregate_words,
    decode_documents,
    decode_spans,
    trim_span,
    trim_spans,
)

BIO = {0: "O", 1: "B-Dis", 2: "I-Dis", 3: "B-Chem", 4: "I-Chem"}


def _decode(labels, scores, words, offsets, text, strategy="first", id2label=BIO, probs=None):
    offsets = np.asarray(offsets)
    pred = TokenPredictions(
        np.asarray(labels),
        np.asarray(scores, dtype=np.float32),
        np.asarray(words),
        offsets[:, 0],
        offsets[:, 1],
        probs,
    )
    return decode_spans(pred, LabelScheme.from_id2label(id2label), strategy, text)


TEXT = "acute renal failure and aspirin"
OFFS = [(0, 5), (6, 11), (12, 19), (20, 23), (24, 31)]


def test_bio_groups_and_drops_outside():
    s = _decode([1, 2, 2, 0, 3], [0.9, 0.8, 0.7, 0.99, 0.6], [0, 1, 2, 3, 4], OFFS, TEXT)
    assert list(zip(s.start.tolist(), s.end.tolist(), s.label)) == [
        (0, 19, "Dis"),
        (24, 31, "Chem"),
    ]
    # entity score: mean of its words' scores
    assert s.score.tolist() == pytest.approx([0.8, 0.6])


def test_a_b_tag_starts_a_new_entity_and_i_after_o_starts_one():
    s = _decode([1, 1, 2, 0, 4], [1] * 5, [0, 1, 2, 3, 4], OFFS, TEXT)
    assert list(zip(s.start.tolist(), s.end.tolist())) == [(0, 5), (6, 19), (24, 31)]


def test_io_scheme_groups_runs_of_the_same_type():
    io = {0: "O", 1: "Dis", 2: "Chem"}
    s = _decode([1, 1, 1, 0, 2], [1] * 5, [0, 1, 2, 3, 4], OFFS, TEXT, id2label=io)
    assert list(zip(s.start.tolist(), s.end.tolist(), s.label)) == [
        (0, 19, "Dis"),
        (24, 31, "Chem"),
    ]


def _entities(labels, id2label, words=(0, 1, 2, 3, 4)) -> list[tuple]:
    s = _decode(labels, [1] * len(labels), list(words), OFFS, TEXT, id2label=id2label)
    return list(zip(s.start.tolist(), s.end.tolist(), s.label))


def test_bioes_and_bilou_end_and_single_token_prefixes():
    bioes = {0: "O", 1: "B-Dis", 2: "I-Dis", 3: "E-Dis", 4: "S-Chem"}
    # B I E O S: "acute renal failure" is one disease, "aspirin" a one-token chemical
    assert _entities([1, 2, 3, 0, 4], bioes) == [(0, 19, "Dis"), (24, 31, "Chem")]
    # S S: two single-token entities side by side, not one
    assert _entities([4, 4, 0, 0, 0], bioes) == [(0, 5, "Chem"), (6, 11, "Chem")]
    bilou = {0: "O", 1: "B-Dis", 2: "I-Dis", 3: "L-Dis", 4: "U-Dis"}
    # B L U O U: L closes "acute renal", so U "failure" is an entity of its own
    assert _entities([1, 3, 4, 0, 4], bilou) == [(0, 11, "Dis"), (12, 19, "Dis"), (24, 31, "Dis")]


def test_underscore_separates_prefix_and_type():
    bio = {0: "O", 1: "B_Dis", 2: "I_Dis"}
    assert _entities([1, 2, 2, 0, 1], bio) == [(0, 19, "Dis"), (24, 31, "Dis")]


def test_bare_labels_without_a_type_decode_as_entity():
    # NCBI-disease BioBERT checkpoints: {0: "B", 1: "I", 2: "O"}
    assert _entities([0, 1, 1, 2, 0], {0: "B", 1: "I", 2: "O"}) == [
        (0, 19, "ENTITY"),
        (24, 31, "ENTITY"),
    ]
    bare_bioes = {0: "O", 1: "B", 2: "I", 3: "E", 4: "S"}
    assert _entities([1, 3, 4, 0, 4], bare_bioes) == [
        (0, 11, "ENTITY"),
        (12, 19, "ENTITY"),
        (24, 31, "ENTITY"),
    ]


@pytest.mark.parametrize(
    ("id2label", "offending"),
    [
        ({0: "O", 1: "B-Dis", 2: "I-Dis", 3: "Chem"}, "Chem"),  # BIO and IO mixed
        ({0: "O", 1: "B", 2: "I", 3: "B-Dis"}, "B-Dis"),  # untyped and typed mixed
        ({0: "O", 1: "B-", 2: "I-Dis"}, "B-"),  # a prefix with no type
        ({0: "O", 1: "B-O", 2: "I-O"}, "B-O"),  # the type "O" would read as outside
        ({0: "O", 1: ""}, "''"),
        ({0: "LABEL_0", 1: "LABEL_1"}, "no outside label"),  # a config's default names
    ],
)
def test_label_sets_that_cannot_be_read_are_refused(id2label, offending):
    with pytest.raises(ValueError, match=f"unsupported NER label set.*{offending}"):
        LabelScheme.from_id2label(id2label)


# "aspirinol" as three subword tokens of one word: asp ##iri ##nol
WORD_TEXT = "aspirinol"
WORD_OFFS = [(0, 3), (3, 6), (6, 9)]


def test_first_takes_the_first_subword():
    s = _decode([3, 0, 0], [0.9, 0.99, 0.99], [0, 0, 0], WORD_OFFS, WORD_TEXT, "first")
    assert (s.start.tolist(), s.end.tolist(), s.label) == ([0], [9], ["Chem"])
    assert s.score.tolist() == pytest.approx([0.9])


def test_max_takes_the_most_confident_subword():
    s = _decode([3, 0, 0], [0.5, 0.9, 0.6], [0, 0, 0], WORD_OFFS, WORD_TEXT, "max")
    assert len(s) == 0  # the 0.9 subword says O, so the whole word is O
    s = _decode([0, 3, 0], [0.5, 0.9, 0.6], [0, 0, 0], WORD_OFFS, WORD_TEXT, "max")
    assert s.label == ["Chem"] and (s.start[0], s.end[0]) == (0, 9)


def test_max_breaks_ties_by_the_earliest_subword():
    label, score, _, _ = aggregate_words(
        np.array([3, 1]), np.array([0.7, 0.7]), np.array([0, 0]), "max"
    )
    assert label.tolist() == [3]


def test_average_uses_mean_probabilities():
    # token 0: O 0.4 / B-Chem 0.6; token 1: O 0.9 / B-Chem 0.1 -> mean O 0.65
    probs = np.zeros((2, 5), np.float32)
    probs[0, [0, 3]] = [0.4, 0.6]
    probs[1, [0, 3]] = [0.9, 0.1]
    s = _decode([3, 0], [0.6, 0.9], [0, 0], [(0, 4), (4, 9)], WORD_TEXT, "average", probs=probs)
    assert len(s) == 0
    probs[1, [0, 3]] = [0.3, 0.7]  # mean B-Chem 0.65
    s = _decode([3, 3], [0.6, 0.7], [0, 0], [(0, 4), (4, 9)], WORD_TEXT, "average", probs=probs)
    assert s.label == ["Chem"] and s.score.tolist() == pytest.approx([0.65])


def test_simple_keeps_subwords_apart_from_word_logic():
    # simple: second subword B-Chem starts a second entity inside the word
    s = _decode([3, 3, 4], [1, 1, 1], [0, 0, 0], WORD_OFFS, WORD_TEXT, "simple")
    assert list(zip(s.start.tolist(), s.end.tolist())) == [(0, 3), (3, 9)]


def test_spans_never_start_or_end_on_whitespace():
    # byte-level BPE offsets that include the leading space
    text = "given  aspirin daily"
    s = _decode([0, 3, 0], [1, 1, 1], [0, 1, 2], [(0, 5), (5, 14), (14, 20)], text)
    assert (s.start[0], s.end[0]) == (7, 14) and text[7:14] == "aspirin"
    assert trim_span(" \n a b \t", 0, 8) == (3, 6)


def test_entity_end_takes_the_combining_mark_after_it():
    # NFD "Guillain-Barré syndrome" as an accent-stripping WordPiece tokenizer offsets it:
    # "barre" ends before the U+0301 that belongs to its last letter.
    text = "Guillain-Barre\u0301 syndrome"
    offs = [(0, 8), (8, 9), (9, 14), (16, 24)]
    s = _decode([1, 2, 2, 0], [1] * 4, [0, 1, 2, 3], offs, text)
    assert (s.start.tolist(), s.end.tolist()) == ([0], [15])
    assert s.end[0] == text.index(" syndrome")


def test_entity_start_never_takes_a_mark_whose_letter_it_lacks():
    # Byte-level BPE may cut U+0301 off its "e": the mark goes with the "e" of the first
    # entity; the second starts at "syndrome", past the mark and the space.
    text = "Barre\u0301 syndrome"
    s = _decode([1, 1], [1, 1], [0, 1], [(0, 5), (5, 15)], text)
    assert list(zip(s.start.tolist(), s.end.tolist())) == [(0, 6), (7, 15)]
    assert trim_span("a \u0301b", 1, 4) == (3, 4)  # a mark after a space is no letter's


def test_every_combining_mark_is_taken_in_by_an_entity_ending_before_it():
    marks = [chr(c) for c in range(0x110000) if unicodedata.combining(chr(c))]
    text = "".join(f"a{m} " for m in marks)
    starts = np.arange(len(marks)) * 3
    got_s, got_e = trim_spans(text, starts, starts + 1)
    assert (got_s == starts).all() and (got_e == starts + 2).all()


def test_whitespace_table_is_what_python_calls_whitespace():
    every = [c for c in range(0x110000) if chr(c).isspace()]
    assert sorted(WHITESPACE.tolist()) == every


def test_trimming_many_spans_at_once_matches_trimming_each():
    # Texts full of ASCII and Unicode spaces and combining marks (and characters beyond
    # the BMP), spans with
    # every kind of edge: the array path must agree with the character loop everywhere.
    rng = np.random.default_rng(7)
    alphabet = list("ab\u00e9\U0001f600") + [" ", "\n", "\u00a0", "\u2003", "\u3000", "\u3001"]
    alphabet += ["\u0301", "\u0301", "\U0001d167"]  # combining marks, in and beyond the BMP
    for _ in range(50):
        text = "".join(rng.choice(alphabet, size=int(rng.integers(1, 40))))
        starts = rng.integers(0, len(text), size=30).astype(np.int32)
        ends = np.minimum(starts + rng.integers(0, 6, size=30), len(text)).astype(np.int32)
        got_s, got_e = trim_spans(text, starts, ends)
        want = [trim_span(text, int(a), int(b)) for a, b in zip(starts, ends)]
        assert list(zip(got_s.tolist(), got_e.tolist())) == want


def test_no_tokens_no_spans_and_bad_label_map():
    s = _decode(np.zeros(0, int), [], np.zeros(0, int), np.zeros((0, 2), int), "")
    assert len(s) == 0
    with pytest.raises(ValueError, match="ids must be"):
        LabelScheme.from_id2label({0: "O", 2: "B-X"})


def _random_doc(rng: np.random.Generator, n_tokens: int):
    """A document of ``n_tokens`` tokens over 1-3 characters each, some with a leading
    space inside the token (as byte-level BPE gives), words of 1-3 tokens, word ids
    from 0 and a special-like token (word id -1) now and then."""
    pieces, starts, ends, words = [], [], [], []
    pos, word = 0, -1
    for i in range(n_tokens):
        gap = " " if rng.random() < 0.5 else ""
        body = "".join(rng.choice(list("abc\u00e9\U0001f600"), size=int(rng.integers(1, 3))))
        lead = " " if rng.random() < 0.2 else ""
        pieces.append(gap + lead + body)
        pos += len(gap)
        starts.append(pos)
        pos += len(lead) + len(body)
        ends.append(pos)
        if i == 0 or rng.random() < 0.5:
            word += 1
        words.append(-1 if rng.random() < 0.05 else word)
    as_int = lambda xs: np.array(xs, dtype=np.int64)  # noqa: E731
    return "".join(pieces), as_int(starts), as_int(ends), as_int(words)


@pytest.mark.parametrize("strategy", ["simple", "first", "max", "average"])
def test_documents_decoded_together_are_decoded_as_each_alone(strategy):
    # Every document ends inside an entity (I-) and the next begins with I- of the same
    # type and the same word id 0: decoded together, nothing may join across them.
    scheme = LabelScheme.from_id2label(BIO)
    rng = np.random.default_rng(11)
    for _ in range(20):
        docs = [_random_doc(rng, int(n)) for n in rng.integers(0, 12, size=6)]
        preds = []
        for _, starts, _, _ in docs:
            n = len(starts)
            probs = rng.dirichlet(np.ones(len(BIO)), size=n).astype(np.float32)
            label = probs.argmax(1)
            if n:
                label[0] = label[-1] = 2
            preds.append((label, probs.max(1), probs))
        alone = [
            decode_spans(TokenPredictions(lab, sc, w, st, en, pr), scheme, strategy, text)
            for (text, st, en, w), (lab, sc, pr) in zip(docs, preds)
        ]
        cat = lambda i, xs: np.concatenate([x[i] for x in xs])  # noqa: E731
        bounds = np.cumsum([0] + [len(d[1]) for d in docs])
        pred = TokenPredictions(
            cat(0, preds), cat(1, preds), cat(3, docs), cat(1, docs), cat(2, docs),
            np.concatenate([p[2] for p in preds]),
        )  # fmt: skip
        spans, counts = decode_documents(pred, bounds, [d[0] for d in docs], scheme, strategy)
        assert counts.tolist() == [len(a) for a in alone]
        for field in ("start", "end", "tag", "score"):
            want = np.concatenate([getattr(a, field) for a in alone])
            np.testing.assert_array_equal(getattr(spans, field), want)
        assert sum(len(a) for a in alone) > 0


def test_simple_takes_the_byte_tokens_of_one_character_as_one_unit():
    # Byte-level BPE: each CJK character is three byte tokens with the character's offsets
    text = "\u80ba\u764c x"
    offs = [(0, 1)] * 3 + [(1, 2)] * 3 + [(3, 4)]
    ents = lambda labels: [  # noqa: E731
        (a, b) for a, b in zip(*(x.tolist() for x in _spans(labels, offs, text)))
    ]
    assert ents([1] * 7) == [(0, 1), (1, 2), (3, 4)]  # each character once, not thrice
    assert ents([1, 2, 2, 2, 2, 2, 0]) == [(0, 2)]
    assert ents([1, 1, 2, 0, 0, 0, 1]) == [(0, 1), (3, 4)]  # a character's first byte decides


def _spans(labels, offs, text):
    s = _decode(labels, [1] * len(labels), list(range(len(labels))), offs, text, "simple")
    return s.start, s.end
