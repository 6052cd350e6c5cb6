"""A terminology for linking: one row per (concept, name), read and checked before any
model loads.

Empty names, null ids and repeated (concept_id, name) pairs are dropped and counted,
never fatal; a dictionary with no usable row or without the ``concept_id`` and ``name``
columns is refused, naming the file and the column.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.storage import files as storage
from pipeline.types import InputError

CONCEPT_ID = "concept_id"
NAME = "name"
LABEL = "label"
REQUIRED = (CONCEPT_ID, NAME)

_NOT_ALNUM = re.compile(r"[\W_]+")


def normalize_name(name: str) -> str:
    """The form exact matches compare: Unicode-compatible, case-folded, every run of
    punctuation and white space one space ("Breast-Cancer," == "breast cancer")."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    return _NOT_ALNUM.sub(" ", folded).strip()


@dataclass(frozen=True)
class DictionaryReport:
    """What reading the dictionary dropped, by reason, and what it kept."""

    rows: int  # as read
    names: int  # kept
    concepts: int
    empty_names: int = 0
    null_ids: int = 0
    duplicates: int = 0  # repeated (concept_id, name) pairs beyond the first: kept once, counted
    labels: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Dictionary:
    """The kept names, in a stable order (concept_id, then name), with their concept,
    label (None where the dictionary gives none) and count: how many rows gave the pair (a
    training mention seen 8 times as one concept counts 8; the count orders concepts that
    share an exact name)."""

    concept_ids: list[str]
    names: list[str]
    labels: list[str | None]
    report: DictionaryReport
    counts: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def names_sha256(self) -> str:
        """Hash of the kept names: the same names give the same vectors, wherever and
        however often the files were rewritten."""
        h = hashlib.sha256()
        for c, n, lab in zip(self.concept_ids, self.names, self.labels):
            h.update(f"{c}\t{n}\t{lab or ''}\n".encode())
        return h.hexdigest()

    @property
    def sha256(self) -> str:
        """Hash of the kept content, counts included: what linking's results depend on."""
        counts = ",".join(map(str, self.counts)).encode()
        return hashlib.sha256(self.names_sha256.encode() + b"\n" + counts).hexdigest()

    def label_codes(self) -> tuple[np.ndarray, list[str]]:
        """Each name's label as an index into the sorted label list, -1 for none."""
        labels = self.report.labels
        index = {lab: i for i, lab in enumerate(labels)}
        codes = np.array([index.get(lab, -1) if lab else -1 for lab in self.labels], np.int32)
        return codes, labels


def from_table(table: pa.Table, where: str) -> Dictionary:
    """Check and clean ``table`` (read from ``where``, named in errors)."""
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise InputError(
            f"link dictionary {where} has no column {missing[0]!r} "
            f"(columns: {table.column_names}); it needs concept_id and name"
        )
    for col in (*REQUIRED, *([LABEL] if LABEL in table.column_names else [])):
        t = table.schema.field(col).type
        if pa.types.is_dictionary(t):
            t = t.value_type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)):
            raise InputError(
                f"link dictionary {where}: column {col!r} has type {t}; it must be strings"
            )
    n_rows = table.num_rows
    if n_rows == 0:
        raise InputError(f"link dictionary {where} has no rows")
    ids = pc.cast(table.column(CONCEPT_ID), pa.string()).to_pylist()
    names = pc.cast(table.column(NAME), pa.string()).to_pylist()
    if LABEL in table.column_names:
        labels = pc.cast(table.column(LABEL), pa.string()).to_pylist()
    else:
        labels = [None] * n_rows
    kept, null_ids, empty, dup = _clean(ids, names, labels)
    if not kept:
        raise InputError(
            f"link dictionary {where} has no usable name: {null_ids} rows without "
            f"concept_id, {empty} with an empty name"
        )
    order = sorted(kept)
    labels_kept = [kept[k][0] for k in order]
    report = DictionaryReport(
        rows=n_rows,
        names=len(order),
        concepts=len({c for c, _ in order}),
        empty_names=empty,
        null_ids=null_ids,
        duplicates=dup,
        labels=sorted({lab for lab in labels_kept if lab}),
    )
    counts = [kept[k][1] for k in order]
    return Dictionary([c for c, _ in order], [n for _, n in order], labels_kept, report, counts)


def _clean(
    ids: list[str | None], names: list[str | None], labels: list[str | None]
) -> tuple[dict[tuple[str, str], tuple[str | None, int]], int, int, int]:
    """Kept (concept_id, name) pairs with their label and row count, and the rows left
    out: without concept_id, with an empty name; and how many repeated a pair. Names keep
    their case; runs of white space become one space."""
    null_ids = empty = dup = 0
    kept: dict[tuple[str, str], tuple[str | None, int]] = {}
    for c, n, lab in zip(ids, names, labels):
        c = c.strip() if c is not None else ""
        if not c:
            null_ids += 1
            continue
        n = " ".join(n.split()) if n is not None else ""
        if not n:
            empty += 1
            continue
        if (c, n) in kept:
            dup += 1
            kept[(c, n)] = (kept[(c, n)][0], kept[(c, n)][1] + 1)
            continue
        kept[(c, n)] = ((lab.strip() or None) if lab is not None else None, 1)
    return kept, null_ids, empty, dup


def read_dictionary(uri: str) -> Dictionary:
    """The dictionary at ``uri``: a Parquet file or prefix (local, file://, s3://...)."""
    try:
        found = storage.parquet_shard_versions(uri)
    except FileNotFoundError as exc:
        raise InputError(f"link dictionary not found: {uri}") from exc
    if not found:
        raise InputError(f"link dictionary {uri}: no Parquet files (*.parquet) there")
    try:
        table = storage.read_parquet_table(uri)
    except (OSError, ValueError) as exc:
        raise InputError(f"link dictionary {uri} is not readable Parquet: {exc}") from exc
    return from_table(table, uri)


def mention_names(entities: pa.Table, where: str) -> pa.Table:
    """Annotated mentions as dictionary rows (concept_id, name = the mention's text,
    label): the field's protocol adds the training mentions to the terminology. Mentions
    without one concept (null, ``-1``, composite ``A|B`` or ``A+B``) are left out."""
    need = [c for c in (CONCEPT_ID, "text") if c not in entities.column_names]
    if need:
        raise InputError(
            f"mentions {where} have no column {need[0]!r} (columns: {entities.column_names})"
        )
    ids = pc.cast(entities.column(CONCEPT_ID), pa.string())
    single = pc.and_(
        pc.and_(pc.is_valid(ids), pc.not_equal(ids, "-1")),
        pc.invert(pc.match_substring_regex(ids, r"[|+]")),
    )
    labels = (
        entities.column(LABEL) if LABEL in entities.column_names
        else pa.nulls(entities.num_rows, pa.string())
    )  # fmt: skip
    table = pa.table({CONCEPT_ID: ids, NAME: entities.column("text"), LABEL: labels})
    return table.filter(pc.fill_null(single, False))
