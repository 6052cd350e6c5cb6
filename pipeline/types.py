"""The types every layer of a run shares: the plan it follows, what it did, and the error
that refuses an input before any work starts. Imports nothing of the project but schemas."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from pipeline import schemas as S

if TYPE_CHECKING:
    from pipeline.linking.dictionary import Dictionary
    from pipeline.models.loading import ModelInfo, TokenizerDef


class InputError(ValueError):
    """The input as a whole cannot be processed; nothing was started."""


@dataclass(frozen=True)
class Shard:
    uri: str
    key: str
    n_rows: int
    version: str = ""  # the file's size and store version when listed (storage._version)


@dataclass
class RunPlan:
    models: dict[str, ModelInfo]
    stride: dict[str, int]  # effective overlap per model role, tokens
    shards: list[Shard]
    todo: list[Shard]
    skipped: list[Shard]
    failed: dict[str, str] = field(default_factory=dict)
    fingerprint: str = ""
    id_type: str = "string"  # the output's doc_id type: a key of schemas.ID_TYPES
    tokenizers: dict[str, TokenizerDef] = field(default_factory=dict)  # per model role
    committed: dict[str, dict[str, Any]] = field(default_factory=dict)  # skipped: key → record
    # Commit records of shards not (readable) in the input now: rows still in the tables.
    earlier: dict[str, dict[str, Any]] = field(default_factory=dict)
    given_spans: pa.Table | None = None  # --spans, as read (execution.given_spans.read)
    context: bool = False  # whether the entities get their clinical context and sections
    dictionary: Dictionary | None = None  # --link-dictionary, as read and cleaned
    link_index: list[Any] | None = None  # [the index's object ref], once the run built it

    @property
    def linked(self) -> bool:
        """Whether every entity is linked to a concept (and links/ written)."""
        return self.dictionary is not None

    @property
    def entities(self) -> bool:
        """Whether the run writes an entities table: a NER model or given spans."""
        return "ner" in self.models or self.given_spans is not None

    @property
    def entity_stage(self) -> bool:
        """Whether the run needs the entity stage (given spans to attach, or context)."""
        return self.entities and (self.context or self.given_spans is not None)

    def output_schemas(self) -> dict[str, pa.Schema]:
        dim = self.models["embed"].dim if "embed" in self.models else None
        ids = S.ID_TYPES[self.id_type]
        out = {S.DOCUMENTS_DIR: S.document_schema(dim, ids)}
        if self.entities:
            out[S.ENTITIES_DIR] = S.entity_schema(ids, self.linked)
        if self.linked:
            out[S.LINKS_DIR] = S.link_schema(ids)
        if self.context:
            out[S.SECTIONS_DIR] = S.section_schema(ids)
        if dim:
            out[S.EMBEDDINGS_DIR] = S.embedding_schema(dim, ids)
        return out


@dataclass
class RunResult:
    """What one run did; becomes run.json."""

    shards_done: list[str] = field(default_factory=list)
    shards_skipped: list[str] = field(default_factory=list)
    shards_failed: dict[str, str] = field(default_factory=dict)
    docs_processed: int = 0
    tokens_processed: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)
    docs_per_batch: int = 0  # as used (``docs_per_batch``), 0 when nothing was to do
    batch_tokens: dict[str, int] = field(default_factory=dict)  # per model role, as used
    linking: dict[str, Any] = field(default_factory=dict)  # the link index: cache, sizes
    wall_s: float = 0.0
