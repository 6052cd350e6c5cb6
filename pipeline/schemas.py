"""Every output table, and the column names the stages pass between them.

Public tables are written with these explicit schemas so that pandas, DuckDB and
Polars read the same types on every run. Internal columns start with ``_``.
"""

from __future__ import annotations

import pyarrow as pa

# Public column names.
DOC_ID = "doc_id"
START = "start"
END = "end"
TEXT = "text"
LABEL = "label"
SCORE = "score"
CHUNK_INDEX = "chunk_index"
N_TOKENS = "n_tokens"
N_CHARS = "n_chars"
N_CHUNKS = "n_chunks"
STATUS = "status"
ERROR = "error"
EMBEDDING = "embedding"
# Clinical context of an entity (pipeline.context): lower-case values, null with --no-context.
NEGATION = "negation"  # affirmed | negated | possible
TEMPORALITY = "temporality"  # recent | historical | hypothetical
EXPERIENCER = "experiencer"  # patient | other
SECTION = "section"  # canonical section name, null outside a recognised section
CONTEXT_COLUMNS = (NEGATION, TEMPORALITY, EXPERIENCER, SECTION)
# Concept linking (pipeline.linking): the entity's best concept, null below the minimum score.
CONCEPT_ID = "concept_id"
CONCEPT_NAME = "concept_name"  # the dictionary name that matched
CONCEPT_SCORE = "concept_score"
LINK_COLUMNS = (CONCEPT_ID, CONCEPT_NAME, CONCEPT_SCORE)
RANK = "rank"
NAME = "name"
TITLE = "title"
TITLE_START = "title_start"
TITLE_END = "title_end"

# Document statuses.
STATUS_OK = "ok"
STATUS_EMPTY = "empty"
STATUS_ERROR = "error"

# Internal columns carried between stages (one row per document).
SHARD = "_shard"  # input shard path
ROW = "_row"  # row index inside its shard
TEXT_INTERNAL = "_text"  # validated text ("" when the document is not processable)
STATUS_INTERNAL = "_status"
ERROR_INTERNAL = "_error"
N_CHARS_INTERNAL = "_n_chars"  # characters of the original text (0 when null)
N_WINDOWS_INTERNAL = "_n_windows"  # NER windows of the document (n_chunks without embeddings)
# Per-model tokenization columns are prefixed with the model's role ("ner" or "embed").
TOKEN_IDS = "_ids"  # list<int32>: token ids of the whole document, no special tokens
TOKEN_STARTS = "_tok_start"  # list<int32>: character start of each token
TOKEN_ENDS = "_tok_end"  # list<int32>: character end of each token (exclusive)
WORD_IDS = "_word"  # list<int32>: word index of each token (subword grouping)
ENTITIES = "_entities"  # list<struct>: entities found in the document
SECTIONS = "_sections"  # list<struct>: the document's sections (SECTION_STRUCT)
LINKS = "_links"  # list<struct>: top-k candidates of the document's entities (LINK_STRUCT)
CHUNK_EMBEDDINGS = "_chunk_embeddings"  # list<struct>: one per window
DOC_EMBEDDING = "_doc_embedding"  # fixed_size_list<float32>[dim] or null

ENTITY_STRUCT = pa.struct(
    [
        pa.field(START, pa.int32()),
        pa.field(END, pa.int32()),
        pa.field(LABEL, pa.string()),
        pa.field(SCORE, pa.float32()),
    ]
)
# What the entity stage leaves: model entities and given spans (score null), with context.
CONTEXT_ENTITY_STRUCT = pa.struct(
    [*ENTITY_STRUCT, *(pa.field(c, pa.string()) for c in CONTEXT_COLUMNS)]
)
LINK_STRUCT = pa.struct(
    [
        pa.field(START, pa.int32()),
        pa.field(END, pa.int32()),
        pa.field(RANK, pa.int32()),
        pa.field(CONCEPT_ID, pa.string()),
        pa.field(NAME, pa.string()),
        pa.field(SCORE, pa.float32()),
    ]
)


CONCEPT_FIELDS = (
    pa.field(CONCEPT_ID, pa.string()),
    pa.field(CONCEPT_NAME, pa.string()),
    pa.field(CONCEPT_SCORE, pa.float32()),
)


def linked_entity_struct(entity: pa.DataType) -> pa.StructType:
    """An entity struct (``ENTITY_STRUCT`` or ``CONTEXT_ENTITY_STRUCT``) with its concept."""
    return pa.struct([*entity, *CONCEPT_FIELDS])


SECTION_STRUCT = pa.struct(
    [
        pa.field(SECTION, pa.string()),
        pa.field(TITLE_START, pa.int32()),
        pa.field(TITLE_END, pa.int32()),
        pa.field(START, pa.int32()),
        pa.field(END, pa.int32()),
    ]
)


def tokens_column(role: str, name: str) -> str:
    """The internal column ``name`` written by the tokenizer of model ``role``."""
    return f"_{role}{name}"


# doc_id keeps the input's type: integer ids (the usual key of a notes table) stay int64,
# so a join back needs no cast; any other id type is read as text.
TEXT_ID = pa.string()
ID_TYPES: dict[str, pa.DataType] = {"string": TEXT_ID, "int64": pa.int64()}


def id_type_name(t: pa.DataType) -> str:
    """The output id type of an input id column of type ``t``: "int64" for integers that
    fit (dictionary-encoded too), "string" for everything else."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    fits = pa.types.is_signed_integer(t) or t in (pa.uint8(), pa.uint16(), pa.uint32())
    return "int64" if fits else "string"


def entity_schema(id_type: pa.DataType = TEXT_ID, linked: bool = False) -> pa.Schema:
    """``linked``: the run links entities to concepts (the concept columns exist only then,
    so that outputs without linking keep their schema)."""
    return pa.schema(
        [
            pa.field(DOC_ID, id_type, nullable=False),
            pa.field(START, pa.int32(), nullable=False),
            pa.field(END, pa.int32(), nullable=False),
            pa.field(TEXT, pa.string(), nullable=False),
            pa.field(LABEL, pa.string(), nullable=False),
            pa.field(SCORE, pa.float32()),  # null for spans given with --spans
            *(pa.field(c, pa.string()) for c in CONTEXT_COLUMNS),
            *(CONCEPT_FIELDS if linked else ()),
        ]
    )


def link_schema(id_type: pa.DataType = TEXT_ID) -> pa.Schema:
    """The top-k candidate concepts of every entity, ``rank`` 1 the best."""
    return pa.schema(
        [
            pa.field(DOC_ID, id_type, nullable=False),
            pa.field(START, pa.int32(), nullable=False),
            pa.field(END, pa.int32(), nullable=False),
            pa.field(RANK, pa.int32(), nullable=False),
            pa.field(CONCEPT_ID, pa.string(), nullable=False),
            pa.field(NAME, pa.string(), nullable=False),
            pa.field(SCORE, pa.float32(), nullable=False),
        ]
    )


def section_schema(id_type: pa.DataType = TEXT_ID) -> pa.Schema:
    """One row per detected section; ``title == text[title_start:title_end]``."""
    return pa.schema(
        [
            pa.field(DOC_ID, id_type, nullable=False),
            pa.field(SECTION, pa.string(), nullable=False),
            pa.field(TITLE, pa.string(), nullable=False),
            pa.field(TITLE_START, pa.int32(), nullable=False),
            pa.field(TITLE_END, pa.int32(), nullable=False),
            pa.field(START, pa.int32(), nullable=False),
            pa.field(END, pa.int32(), nullable=False),
        ]
    )


def embedding_type(dim: int) -> pa.DataType:
    return pa.list_(pa.float32(), dim)


def chunk_struct(dim: int) -> pa.DataType:
    return pa.struct(
        [
            pa.field(START, pa.int32()),
            pa.field(END, pa.int32()),
            pa.field(N_TOKENS, pa.int32()),
            pa.field(EMBEDDING, embedding_type(dim)),
        ]
    )


def embedding_schema(dim: int, id_type: pa.DataType = TEXT_ID) -> pa.Schema:
    return pa.schema(
        [
            pa.field(DOC_ID, id_type, nullable=False),
            pa.field(CHUNK_INDEX, pa.int32(), nullable=False),
            pa.field(START, pa.int32(), nullable=False),
            pa.field(END, pa.int32(), nullable=False),
            pa.field(N_TOKENS, pa.int32(), nullable=False),
            pa.field(EMBEDDING, embedding_type(dim), nullable=False),
        ]
    )


def document_schema(dim: int | None, id_type: pa.DataType = TEXT_ID) -> pa.Schema:
    """``dim`` is None when the run has no embedding model: the column is then all null."""
    emb_type = embedding_type(dim) if dim else pa.list_(pa.float32())
    return pa.schema(
        [
            pa.field(DOC_ID, id_type),
            pa.field(N_CHARS, pa.int64(), nullable=False),
            pa.field(N_TOKENS, pa.int64(), nullable=False),
            pa.field(N_CHUNKS, pa.int32(), nullable=False),
            pa.field(STATUS, pa.string(), nullable=False),
            pa.field(ERROR, pa.string()),
            pa.field(EMBEDDING, emb_type),
        ]
    )


# Output folder layout.
ENTITIES_DIR = "entities"
EMBEDDINGS_DIR = "embeddings"
SECTIONS_DIR = "sections"
LINKS_DIR = "links"
DOCUMENTS_DIR = "documents"
# Every table folder, in the order the job's summary lists them.
TABLE_DIRS = (DOCUMENTS_DIR, ENTITIES_DIR, LINKS_DIR, SECTIONS_DIR, EMBEDDINGS_DIR)
RUN_JSON = "run.json"
