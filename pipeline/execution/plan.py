"""Before any model loads: resolve models, list and check shards, decide what to do.

Whole-input problems (no Parquet files, a missing column) raise ``InputError``
with a message naming the shard and column; unreadable shards are set aside as
failed so every other shard still runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline import schemas as S
from pipeline.config import AnnotateConfig, ModelSpec
from pipeline.context import lexicon as context_lexicon
from pipeline.core.spans import LabelScheme
from pipeline.core.windows import effective_stride
from pipeline.execution import given_spans
from pipeline.linking.dictionary import Dictionary, read_dictionary
from pipeline.linking.index import INDEX_VERSION
from pipeline.models import families
from pipeline.models import loading as models
from pipeline.models.loading import ModelInfo, TokenizerDef
from pipeline.stages.read import is_string_type
from pipeline.storage import files as storage
from pipeline.storage.output import OutputFolder
from pipeline.storage.shards import shard_key
from pipeline.types import InputError, RunPlan, Shard

log = logging.getLogger(__name__)

NO_MODEL = "no model given: pass --ner-model and/or --embed-model (or entity spans with --spans)"


def shard_groups(shards: list[Shard], docs_per_block: int, max_blocks: int) -> list[list[Shard]]:
    """``shards`` in order, cut into consecutive groups of at most ``max_blocks`` blocks of
    ``docs_per_block`` documents (a shard with more blocks is a group alone). Zero-row
    shards are left out: they have no documents to run."""
    groups: list[list[Shard]] = []
    current: list[Shard] = []
    blocks = 0
    for shard in shards:
        if shard.n_rows == 0:
            continue
        need = -(-shard.n_rows // docs_per_block)
        if current and blocks + need > max_blocks:
            groups.append(current)
            current, blocks = [], 0
        current.append(shard)
        blocks += need
    if current:
        groups.append(current)
    return groups


def resolve_model(spec: ModelSpec, allow_pickle: bool = False) -> ModelInfo:
    """Find the model's folder (downloading an s3:// copy once) and read its defaults."""
    local = models.resolve_model_dir(spec.source)
    # refuse a pickle-only checkpoint here, before Ray starts, not in every actor
    models.check_safetensors(local, allow_pickle)
    cfg = models.read_config(local)
    max_length = spec.max_length or models.default_max_length(cfg)
    limit = families.position_limit(cfg)
    if limit is not None and max_length > limit:
        raise InputError(
            f"--max-length {max_length} is longer than {spec.role} model {spec.source} can "
            f"take: its position table holds {limit} tokens"
        )
    labels = None
    pooling = dim = None
    if spec.role == "ner":
        raw = cfg.get("id2label") or {}
        labels = {int(k): v for k, v in raw.items()}
        if not labels or set(labels.values()) <= {f"LABEL_{i}" for i in range(len(labels))}:
            raise InputError(
                f"NER model {spec.source} declares no entity labels (config.json id2label); "
                "is it a token-classification model?"
            )
        try:  # the actors would fail on it, each, after Ray and the models started
            LabelScheme.from_id2label(labels)
        except ValueError as exc:
            raise InputError(f"NER model {spec.source}: {exc}") from exc
    else:
        pooling = spec.pooling or models.default_pooling(local, spec.source)
        dim = models.hidden_size(cfg)
        if dim is None:
            raise InputError(
                f"embed model {spec.source}: config.json names no hidden size "
                "(hidden_size, d_model, dim or n_embd)"
            )
    revision = models.model_revision(local)  # pulled copies: _provenance.json; hub: commit
    return ModelInfo(
        source=spec.source,
        local_dir=str(local),
        model_type=cfg.get("model_type", ""),
        max_length=int(max_length),
        weights_sha256=models.weights_hash(local),
        revision=revision,
        labels=labels,
        pooling=pooling,
        dim=dim,
    )


def tokenizer_groups(tokenizers: dict[str, TokenizerDef]) -> list[tuple[str, ...]]:
    """The model roles grouped by tokenizer, in role order: models whose tokenizers
    encode alike (a PubMedBERT NER model and SapBERT, say) share one tokenize stage."""
    groups: dict[str, list[str]] = {}
    for role, tok in tokenizers.items():
        groups.setdefault(tok.sha256, []).append(role)
    return [tuple(roles) for roles in groups.values()]


def check_shards(
    uris: list[str], cfg: AnnotateConfig
) -> tuple[dict[str, int], dict[str, str], set[str]]:
    """Row counts of readable shards, a reason for each unreadable one, and the output id
    types (``schemas.id_type_name``) of the readable shards' id columns.

    Raises ``InputError`` when a readable shard lacks the id or text column.
    """
    counts: dict[str, int] = {}
    failed: dict[str, str] = {}
    id_types: set[str] = set()
    for uri in uris:
        try:
            n_rows, schema = storage.parquet_metadata(uri)
        except Exception as exc:
            failed[uri] = f"not a readable Parquet file ({type(exc).__name__}: {exc})"
            log.error("shard %s is not a readable Parquet file: %s", uri, type(exc).__name__)
            continue
        for role, column in (("id", cfg.id_column), ("text", cfg.text_column)):
            if column not in schema.names:
                raise InputError(
                    f"shard {uri} has no {role} column {column!r} (columns: {schema.names}); "
                    f"set --{role}-column"
                )
            if schema.names.count(column) > 1:
                raise InputError(f"shard {uri} has {schema.names.count(column)} columns {column!r}")
        id_type = schema.field(cfg.id_column).type
        if not _id_type_ok(id_type):
            raise InputError(
                f"shard {uri}: id column {cfg.id_column!r} has type {id_type}; ids must be "
                "strings, bytes or numbers (set --id-column)"
            )
        counts[uri] = n_rows
        id_types.add(S.id_type_name(id_type))
    return counts, failed, id_types


def _id_type_ok(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return (
        is_string_type(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_integer(t)
        or pa.types.is_floating(t)  # integer ids with a missing value, as pandas writes them
        or pa.types.is_null(t)  # all null: every row an error, with its message
    )


def fingerprint(
    cfg: AnnotateConfig,
    infos: dict[str, ModelInfo],
    stride: dict[str, int],
    id_type: str = "string",
    extra: dict[str, Any] | None = None,
) -> str:
    """What makes two runs' rows comparable: models (by weights), chunking, columns."""
    parts: dict[str, Any] = {
        "id_column": cfg.id_column,
        "text_column": cfg.text_column,
        "aggregation": cfg.aggregation if "ner" in infos else None,
        # only with a NER model: embedding-only outputs keep their fingerprint
        **({"decoding": cfg.decoding} if "ner" in infos else {}),
        "normalize": cfg.normalize,
        "max_chars": cfg.max_chars,
        "dtype": cfg.dtype,
        "models": {
            role: {
                "weights_sha256": i.weights_sha256,
                "tokenizer_sha256": i.tokenizer_sha256,  # other ids, other windows
                "labels": i.labels,  # relabelled: other entities from the same weights
                "max_length": i.max_length,
                "stride": stride[role],
                "pooling": i.pooling,
            }
            for role, i in sorted(infos.items())
        },
    }
    if id_type != "string":  # absent for text ids, so that their outputs keep their print
        parts["id_type"] = id_type
    parts.update(extra or {})  # what only some runs have (context, given spans)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def resolve_models(cfg: AnnotateConfig) -> tuple[dict[str, ModelInfo], dict[str, TokenizerDef]]:
    """Each model of ``cfg`` resolved, with its tokenizer, by role (NER first)."""
    specs = {s.role: s for s in (cfg.ner, cfg.embed, cfg.link) if s is not None}
    if not specs and cfg.spans_uri is None:
        raise InputError(NO_MODEL)
    infos, tokenizers = {}, {}
    for role, spec in specs.items():
        try:
            info = resolve_model(spec, cfg.allow_pickle)
            tok = models.load_tokenizer(Path(info.local_dir), spec.trust_remote_code)
        except InputError:
            raise
        except (ValueError, OSError) as exc:  # unreadable folder, unsupported pooling, ...
            raise InputError(f"{role} model {spec.source}: {exc}") from exc
        tokenizers[role] = models.TokenizerDef.of(tok)
        infos[role] = replace(info, tokenizer_sha256=tokenizers[role].sha256)
    return infos, tokenizers


def window_strides(infos: dict[str, ModelInfo], stride: int) -> dict[str, int]:
    """The overlap each model's windows get (tokens), ``stride`` bounded by its window."""
    out = {}
    for role, info in infos.items():
        n_special = 2  # refined by the actors; bounded here so the fingerprint is stable
        if info.max_length - n_special < 1:
            raise InputError(
                f"--max-length {info.max_length} leaves no room for text beside the {role} "
                f"model's special tokens: give at least {n_special + 1}"
            )
        out[role] = effective_stride(info.max_length - n_special, stride)
    return out


def make_plan(cfg: AnnotateConfig) -> RunPlan:
    if cfg.id_column == cfg.text_column:  # ids land in every table and in logs
        raise InputError(
            f"--id-column and --text-column are both {cfg.id_column!r}: ids must not be the text"
        )
    versions = storage.parquet_shard_versions(cfg.input_uri)
    uris = sorted(versions)
    if not uris:
        raise InputError(f"no Parquet files (*.parquet) under {cfg.input_uri}")
    counts, failed, id_types = check_shards(uris, cfg)
    if not counts:
        raise InputError(f"none of the {len(uris)} Parquet files under {cfg.input_uri} is readable")
    dictionary = _link_dictionary(cfg)  # before any model is looked at
    infos, tokenizers = resolve_models(cfg)
    tokenizers.pop("link", None)  # it encodes names and mentions, not whole documents
    stride = window_strides(infos, cfg.stride)
    # One id type for the whole output, so that readers see one schema over all files.
    id_type = "int64" if id_types == {"int64"} else "string"
    spans = given_spans.read(cfg.spans_uri, id_type) if cfg.spans_uri else None
    entities = "ner" in infos or spans is not None
    if dictionary is not None and not entities:
        raise InputError("--link-dictionary links entities: pass --ner-model or --spans as well")
    extra = _entity_parts(cfg, entities) | _link_parts(cfg, dictionary)
    fp = fingerprint(cfg, infos, stride, id_type, extra)
    shards = [
        Shard(u, shard_key(u, cfg.input_uri), counts[u], versions[u]) for u in uris if u in counts
    ]
    keys = [s.key for s in shards]
    if len(set(keys)) != len(keys):
        raise InputError(f"two input shards map to the same output name under {cfg.input_uri}")
    return RunPlan(
        infos, stride, shards, list(shards), [], failed, fp, id_type=id_type,
        tokenizers=tokenizers, given_spans=spans, context=entities and cfg.context,
        dictionary=dictionary,
    )  # fmt: skip


def _link_dictionary(cfg: AnnotateConfig) -> Dictionary | None:
    if cfg.link_dictionary is None:
        return None
    if cfg.link_top_k < 1:
        raise InputError(f"--link-top-k must be at least 1, got {cfg.link_top_k}")
    dictionary = read_dictionary(cfg.link_dictionary)
    r = dictionary.report
    if r.empty_names or r.null_ids or r.duplicates:
        log.warning(
            "link dictionary: %d of %d rows left out (%d empty names, %d without "
            "concept_id, %d repeated (concept_id, name) pairs)",
            r.rows - r.names, r.rows, r.empty_names, r.null_ids, r.duplicates,
        )  # fmt: skip
    log.info("link dictionary: %d names of %d concepts", r.names, r.concepts)
    return dictionary


def _link_parts(cfg: AnnotateConfig, dictionary: Dictionary | None) -> dict[str, Any]:
    """The fingerprint's part for linking runs: the dictionary's content and how
    candidates are scored and kept (the link model is among the models)."""
    if dictionary is None:
        return {}
    return {
        "link": {
            "dictionary_sha256": dictionary.sha256,
            "top_k": cfg.link_top_k,
            "min_score": cfg.link_min_score,
            "sparse_weight": cfg.link_sparse_weight,
            "abbreviations": cfg.link_abbreviations,
            "index": INDEX_VERSION,
        }
    }


def _entity_parts(cfg: AnnotateConfig, entities: bool) -> dict[str, Any]:
    """The fingerprint's part for runs with entities: the context rules' version (or that
    context is off), and the given spans' files by size and store version."""
    if not entities:
        return {}
    parts: dict[str, Any] = {"context": context_lexicon.load().version if cfg.context else "off"}
    if cfg.spans_uri:
        versions = storage.parquet_shard_versions(cfg.spans_uri)
        if not versions:
            raise InputError(f"--spans {cfg.spans_uri}: no Parquet files (*.parquet) there")
        parts["spans"] = hashlib.sha256("\n".join(sorted(versions.values())).encode()).hexdigest()
    return parts


def skip_committed(rp: RunPlan, out: OutputFolder) -> None:
    """Set aside the shards ``out`` has a commit record for, made from the file as it is
    now; a shard written again since (another size or store version) is done again, its
    files replaced."""
    records = out.commit_records()
    have = [s for s in rp.shards if s.key in records]
    rp.committed = {}
    for s in have:
        record = records[s.key]
        if record.get("input_version") == s.version and record.get("shard") == s.uri:
            rp.committed[s.key] = record
    changed = len(have) - len(rp.committed)
    if changed:
        log.warning(
            "%d committed shards changed since they were committed (size or store "
            "version): they are done again", changed,
        )  # fmt: skip
    current = {s.key for s in rp.shards}
    rp.earlier = {k: r for k, r in records.items() if k not in current}
    if rp.earlier:
        log.warning(
            "%d committed shards are not readable in the input now (removed, renamed or "
            "unreadable): their rows stay in the output, listed in run.json under "
            "earlier_shards", len(rp.earlier),
        )  # fmt: skip
    rp.skipped = [s for s in rp.shards if s.key in rp.committed]
    rp.todo = [s for s in rp.shards if s.key not in rp.committed]
