"""Frozen settings: what the algorithm needs, apart from how it is scheduled."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

Aggregation = Literal["first", "average", "max", "simple"]
Decoding = Literal["viterbi", "greedy"]
Pooling = Literal["mean", "cls"]
DType = Literal["auto", "float32", "bfloat16", "float16"]
Mode = Literal["resume", "overwrite"]

AGGREGATIONS: tuple[str, ...] = ("first", "average", "max", "simple")
DECODINGS: tuple[str, ...] = ("viterbi", "greedy")
POOLINGS: tuple[str, ...] = ("mean", "cls")
DTYPES: tuple[str, ...] = ("auto", "float32", "bfloat16", "float16")
MODES: tuple[str, ...] = ("resume", "overwrite")

# Hard ceiling for a window: BERT-family position tables stop at 512.
DEFAULT_MAX_WINDOW = 512


@dataclass(frozen=True)
class ModelSpec:
    """One encoder, as the user named it, and the local folder it was resolved to."""

    source: str  # local folder, s3:// prefix or hub id, as given
    role: Literal["ner", "embed", "link"]
    max_length: int | None = None  # tokens per window incl. special tokens; None = from config
    pooling: Pooling | None = None  # embed only; None = what the model folder declares
    trust_remote_code: bool = False


@dataclass(frozen=True)
class AnnotateConfig:
    """What the annotate job computes. Lengths are in tokens unless named ``chars``."""

    input_uri: str
    output_uri: str
    ner: ModelSpec | None = None
    embed: ModelSpec | None = None
    id_column: str = "doc_id"
    text_column: str = "text"
    stride: int = 128  # overlap between consecutive windows, tokens
    aggregation: Aggregation = "first"
    decoding: Decoding = "viterbi"  # best sequence the label scheme allows, or per word
    normalize: bool = True  # L2-normalise embeddings
    dtype: DType = "auto"
    max_chars: int = 1_000_000  # longer documents get status "error", never truncated
    mode: Mode = "resume"
    allow_pickle: bool = False  # load pickle-only checkpoints (can run code)
    spans_uri: str | None = None  # entity spans given by the user (doc_id, start, end, label)
    context: bool = True  # negation, temporality, experiencer and section of every entity
    link_dictionary: str | None = None  # concept_id, name[, label]: link every entity
    link: ModelSpec | None = None  # encoder of names and mentions (default: the embed model)
    link_top_k: int = 5  # candidates per entity in links/
    link_min_score: float | None = None  # below it an entity gets no concept (None: always)
    link_sparse_weight: float = 0.5  # weight of the character 3-gram score beside the dense
    link_abbreviations: bool = True  # a short form the document defines: linked by its long form

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Documents per Ray Data batch when not given. On CPUs, small batches let the NER and
# embedding actors overlap (a pass costs the same per token at any size); a GPU wants
# batches big enough that sorting windows by length fills large passes.
CPU_DOCS_PER_BATCH = 64
GPU_DOCS_PER_BATCH = 512

# Tokens per forward pass when not given (padding included). A CPU pass costs about the
# same per token at any size. On a GPU bigger passes run faster (BERT-base, bf16, H100:
# NER 1.37M real tokens/s at 16384, 1.77M at 65536, 1.66M at 131072), up to what the
# activations leave room for beside the weights (sizing.batch_tokens).
CPU_BATCH_TOKENS = 16384
GPU_MAX_BATCH_TOKENS = 65536
GPU_ACTIVATION_BYTES = 2 * 1024**3
# Ray Data keeps statistics for every block a dataset has produced in the driver until
# the dataset is done (ray-project/ray#66016): about 0.15 MiB a block measured here.
# Shards are therefore run as several datasets of at most this many blocks, which caps
# the driver's growth; each dataset starts its actors afresh (model loads, seconds).
MAX_BLOCKS_PER_DATASET = 1000


@dataclass(frozen=True)
class Scheduling:
    """How the work is spread over the cluster; never changes the rows produced."""

    num_actors: int | None = None  # per model; None = one per GPU, or 1 on CPU
    batch_tokens: int | None = None  # per forward pass, padded; None = sizing.batch_tokens
    docs_per_batch: int | None = None  # per Ray Data batch; None = the device default above
    tokenizer_actors: int | None = None  # per tokenize stage; None = sizing.tokenizer_actors
    max_blocks_per_dataset: int = MAX_BLOCKS_PER_DATASET
    gpus_per_actor: float | None = None  # None = 1 when the cluster has GPUs, else 0
    compile_model: bool = False  # torch.compile each encoder: faster passes, slower start


@dataclass(frozen=True)
class EncoderSettings:
    """What an encoder stage needs to compute its rows: the same settings give the same
    rows, however the stage is scheduled. Lengths are in tokens."""

    model_dir: str  # local folder
    max_length: int  # tokens per window, special tokens included
    stride: int  # overlap between consecutive windows
    dtype: DType = "auto"
    trust_remote_code: bool = False
    allow_pickle: bool = False  # load pickle-only checkpoints (can run code)


@dataclass(frozen=True)
class NerSettings(EncoderSettings):
    aggregation: Aggregation = "first"
    decoding: Decoding = "viterbi"


@dataclass(frozen=True)
class EmbedSettings(EncoderSettings):
    pooling: Pooling = "mean"
    normalize: bool = True  # L2-normalise window and document vectors


@dataclass(frozen=True)
class EncoderScheduling:
    """How one encoder actor runs; never changes the rows it produces."""

    batch_tokens: int  # per forward pass, padding included
    threads: int | None = None  # torch threads; None = torch's default
    compile_model: bool = False  # torch.compile: faster passes, slower start
