"""CPU stage after the encoders: the entities of each document (the NER model's and the
spans given with ``--spans``), with their clinical context, and the document's sections.

It runs beside the tokenizers on the light CPUs, never on a GPU actor: ConText is a few
regular-expression scans of the text (``pipeline.context``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from pipeline import schemas as S
from pipeline.context import lexicon
from pipeline.context.analyse import analyse
from pipeline.core.given_spans import attaches
from pipeline.storage import files as storage


@dataclass(frozen=True)
class EntitySettings:
    context: bool = True
    # A Parquet file of the given spans that can attach (doc_id, start, end, label; no
    # nulls, start < end; doc_id in the output's id type); None without --spans. A file,
    # not the table: an actor restarted on another node reads it again.
    spans_uri: str | None = None


class SpanIndex:
    """The given spans of each doc_id."""

    def __init__(self, spans: pa.Table) -> None:
        ids = spans.column(S.DOC_ID).to_pylist()
        starts = spans.column(S.START).to_pylist()
        ends = spans.column(S.END).to_pylist()
        labels = spans.column(S.LABEL).to_pylist()
        self.by_doc: dict[Any, list[tuple[int, int, str]]] = {}
        for d, s, e, label in zip(ids, starts, ends, labels):
            self.by_doc.setdefault(d, []).append((s, e, label))

    def get(self, doc_id: Any) -> list[tuple[int, int, str]]:
        return self.by_doc.get(doc_id, [])


def _entity(s: int, e: int, label: str, score: float | None) -> dict[str, Any]:
    return {S.START: s, S.END: e, S.LABEL: label, S.SCORE: score}


class EntityStage:
    """Adds the given spans to ``_entities`` (score null) and, with context on, each
    entity's negation, temporality, experiencer and section, and ``_sections``."""

    def __init__(self, settings: EntitySettings) -> None:
        self.context = settings.context
        self.spans = None
        if settings.spans_uri is not None:
            self.spans = SpanIndex(storage.read_parquet_table(settings.spans_uri))
        self.lexicon = lexicon.load() if settings.context else None

    def _entities(
        self, batch: pa.Table, texts: list[str], statuses: list[str]
    ) -> list[list[dict[str, Any]]]:
        n = batch.num_rows
        if S.ENTITIES in batch.column_names:
            model = [list(x or []) for x in batch.column(S.ENTITIES).to_pylist()]
        else:
            model = [[] for _ in range(n)]
        if self.spans is None:
            return model
        ids = batch.column(S.DOC_ID).to_pylist()
        for i in range(n):
            if statuses[i] != S.STATUS_OK:
                continue  # counted in run.json (spans_rejected), never attached
            given = [
                _entity(s, e, label, None)
                for s, e, label in self.spans.get(ids[i])
                if attaches(s, e, len(texts[i]))
            ]
            if given:
                both = model[i] + given
                model[i] = sorted(both, key=lambda x: (x[S.START], x[S.END], x[S.SCORE] is None))
        return model

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = batch.column(S.TEXT_INTERNAL).to_pylist()
        statuses = batch.column(S.STATUS_INTERNAL).to_pylist()
        entities = self._entities(batch, texts, statuses)
        sections: list[list[dict[str, Any]]] = [[] for _ in entities]
        if self.context:
            for i, (text, ents) in enumerate(zip(texts, entities)):
                if statuses[i] == S.STATUS_OK:
                    sections[i] = self._annotate(text, ents)
        if S.ENTITIES in batch.column_names:
            batch = batch.drop_columns([S.ENTITIES])
        batch = batch.append_column(
            S.ENTITIES, pa.array(entities, pa.list_(S.CONTEXT_ENTITY_STRUCT))
        )
        if self.context:
            batch = batch.append_column(S.SECTIONS, pa.array(sections, pa.list_(S.SECTION_STRUCT)))
        return batch

    def _annotate(self, text: str, ents: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Context into each of ``ents`` (in place); returns the document's sections."""
        ctx = analyse(text, [(x[S.START], x[S.END]) for x in ents], self.lexicon)
        for j, x in enumerate(ents):
            x[S.NEGATION] = ctx.negation[j]
            x[S.TEMPORALITY] = ctx.temporality[j]
            x[S.EXPERIENCER] = ctx.experiencer[j]
            x[S.SECTION] = ctx.section[j]
        return [
            {S.SECTION: s.section, S.TITLE_START: s.title_start, S.TITLE_END: s.title_end,
             S.START: s.start, S.END: s.end}
            for s in ctx.sections
        ]  # fmt: skip
