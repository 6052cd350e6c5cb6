"""run.json and the closing summary: counts, timings, models. Never document text."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from pipeline import schemas as S
from pipeline.config import AnnotateConfig, Scheduling
from pipeline.core import repeated_ids
from pipeline.execution import given_spans
from pipeline.storage import files as storage
from pipeline.types import RunPlan, RunResult


def table_counts(rp: RunPlan, result: RunResult) -> dict[str, dict[str, int]]:
    """Over every committed shard (this run's and earlier runs'): rows per table
    (``rows``), entities per label (``labels``) and per negation value (``negation``),
    documents per status (``statuses``)."""
    records = [*result.records, *(rp.committed[s.key] for s in rp.skipped), *rp.earlier.values()]
    keys = ("rows", "labels", "negation", "statuses")
    out: dict[str, Counter[str]] = {k: Counter() for k in keys}
    for r in records:
        for k, counter in out.items():
            counter.update(r.get(k, {}))
    return {k: dict(v) for k, v in out.items()}


def _linking(rp: RunPlan, result: RunResult) -> dict[str, Any]:
    """What linking read of its dictionary (names dropped, by reason) and how this run got
    its index (from the cache or embedded, sizes, seconds)."""
    if rp.dictionary is None:
        return {}
    return {"linking": {"dictionary": rp.dictionary.report.to_dict(), "index": result.linking}}


def build_run_json(
    cfg: AnnotateConfig, sched: Scheduling, rp: RunPlan, result: RunResult
) -> dict[str, Any]:
    counts = table_counts(rp, result)
    wall = max(result.wall_s, 1e-9)
    spans = given_spans.report(cfg.output_uri, rp.given_spans) if rp.given_spans else {}
    # Any URI may carry user:password@ (fsspec accepts it): run.json is read widely.
    return redacted(
        {
            "config": cfg.to_dict(),
            "scheduling": sched.__dict__,
            "fingerprint": rp.fingerprint,
            "models": {role: info.__dict__ for role, info in rp.models.items()},
            "effective_stride": rp.stride,
            "input_shards": [s.uri for s in rp.shards] + sorted(rp.failed),
            "shards": {
                "total": len(rp.shards) + len(rp.failed),
                "done": len(result.shards_done),
                "skipped": len(result.shards_skipped),
                "failed": len(result.shards_failed),
            },
            "failed_shards": result.shards_failed,
            # committed by earlier runs from files not (readable) in the input now
            "earlier_shards": {r["key"]: r["shard"] for r in rp.earlier.values()},
            "duplicate_doc_ids": duplicate_doc_ids(cfg.output_uri, rp),
            "rows": counts["rows"],
            "entities_by_label": counts["labels"],
            "entities_by_negation": counts["negation"],
            "documents_by_status": counts["statuses"],
            **spans,
            **_linking(rp, result),
            "this_run": {
                "documents": result.docs_processed,
                "tokens": result.tokens_processed,
                "docs_per_batch": result.docs_per_batch,
                "batch_tokens": result.batch_tokens,
                "wall_s": round(result.wall_s, 3),
                "docs_per_s": round(result.docs_processed / wall, 2),
                "tokens_per_s": round(result.tokens_processed / wall, 1),
            },
        }
    )


def duplicate_doc_ids(output_uri: str, rp: RunPlan) -> dict[str, Any]:
    """doc_ids that occur in more than one row of the documents table, within or across
    shards. Both rows are kept (never merged); only counts and shard names are reported,
    since ids can be identifiers such as record numbers."""
    documents = storage.join(output_uri, S.DOCUMENTS_DIR)
    dup = repeated_ids.repeated_doc_ids(lambda: storage.doc_id_columns(documents))
    key_to_uri = {s.key: s.uri for s in rp.shards}
    shards = sorted({key_to_uri.get(k, k) for k in dup.column("key").to_pylist()})
    # one row per (id, file) carrying the id's total: count each id's total once
    totals = dict(zip(dup.column(S.DOC_ID).to_pylist(), dup.column("count").to_pylist()))
    n_ids = len(totals)
    extra = sum(totals.values()) - n_ids
    return {"count": n_ids, "extra_rows": extra, "shards": shards}


def summary_text(run: dict[str, Any], output_uri: str) -> str:
    lines = [f"Tables written under {output_uri}:"]
    for table in S.TABLE_DIRS:
        if table in run["rows"]:
            lines.append(f"  {storage.join(output_uri, table)}/  ({run['rows'][table]} rows)")
    lines.append(f"  {storage.join(output_uri, S.RUN_JSON)}")
    sh = run["shards"]
    lines.append(
        f"Shards: {sh['done']} done, {sh['skipped']} skipped (already committed), "
        f"{sh['failed']} failed of {sh['total']}"
    )
    st = run["documents_by_status"]
    lines.append("Documents: " + ", ".join(f"{v} {k}" for k, v in sorted(st.items())))
    if run["entities_by_label"]:
        lines.append(
            "Entities by label: "
            + ", ".join(f"{k} {v}" for k, v in sorted(run["entities_by_label"].items()))
        )
    lines.extend(_context_lines(run))
    lines.extend(_linking_lines(run))
    t = run["this_run"]
    lines.append(
        f"This run: {t['documents']} documents, {t['tokens']} tokens in {t['wall_s']:.1f} s "
        f"({t['docs_per_s']:.1f} docs/s, {t['tokens_per_s']:.0f} tokens/s)"
    )
    for uri, why in run["failed_shards"].items():
        lines.append(f"FAILED shard {uri}: {why}")
    return "\n".join(lines)


def _linking_lines(run: dict[str, Any]) -> list[str]:
    if "linking" not in run:
        return []
    d, index = run["linking"]["dictionary"], run["linking"]["index"]
    left_out = d["rows"] - d["names"]
    line = f"Linking: {d['names']} names of {d['concepts']} concepts"
    if left_out:
        line += (
            f" ({left_out} rows left out: {d['null_ids']} without concept_id, "
            f"{d['empty_names']} empty names, {d['duplicates']} repeated pairs)"
        )
    if index:
        how = "read from the cache" if index["cache_hit"] else "embedded and cached"
        line += f"; name vectors {how} ({index['embed_seconds']:.1f} s)"
    return [line]


def _context_lines(run: dict[str, Any]) -> list[str]:
    lines = []
    negation = run.get("entities_by_negation") or {}
    total = sum(negation.values())
    if total:
        lines.append(
            "Entities by negation: "
            + ", ".join(f"{k} {v} ({100 * v / total:.1f}%)" for k, v in sorted(negation.items()))
        )
    rejected = run.get("spans_rejected") or {}
    if any(rejected.values()):
        first = run.get("spans_rejected_doc_ids", {})
        lines.append(
            f"Given spans: {run.get('spans_attached', 0)} attached of {run.get('spans_given', 0)}"
            "; rejected: "
            + "; ".join(
                f"{k} {n} (first doc_ids: {', '.join(map(str, first.get(k, [])))})"
                for k, n in rejected.items()
                if n
            )
        )
    return lines


def redact_uri(uri: str) -> str:
    """``uri`` without any user:password@ part."""
    return re.sub(r"//[^/@\s]+@", "//***@", uri)


def redacted(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` (any nesting of dicts and lists) for logs and run.json: URIs lose any
    user:password@ part, in values and in keys."""

    def clean(v: Any) -> Any:
        if isinstance(v, dict):
            return {clean(k): clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        if isinstance(v, str):
            return redact_uri(v)
        return v

    return clean(config)
