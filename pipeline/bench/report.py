"""The benchmark's results as text for the terminal and as Markdown sections that a
results file (docs/benchmarks.md) keeps one per corpus, regenerated in place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TABLE_HEAD = (
    "row",
    "dtype",
    "tokens/s",
    "tokens/CPU-s",
    "docs/s",
    "x row 1",
    "x ref",
    "padding",
    "peak MiB",
    "notes",
)


def _cells(r: dict[str, Any]) -> list[str]:
    notes = []
    if "batch_size" in r:
        notes.append(f"batch size {r['batch_size']}")
    if "batch_trials_s" in r:
        notes.append("tried " + ", ".join(f"{b}: {t:.1f}s" for b, t in r["batch_trials_s"].items()))
    if "stage_s" in r:
        notes.append(
            f"tokenize {r['tokenize_s']:.1f}s + stage {r['stage_s']:.1f}s"
            + (f" + rows {r['rows_s']:.1f}s" if "rows_s" in r else "")
            + f" (stage alone {r['stage_tokens_per_s']:,.0f} tokens/s)"
        )
    if "mb_per_cpu_s" in r:
        notes.append(f"{r['mb_per_cpu_s']:.2f} MB of text per CPU second, {r['entities']} entities")
    if "mfu" in r:
        notes.append(f"{r['model_flop_per_s'] / 1e12:.0f} TFLOP/s, MFU {r['mfu']:.1%}")
    if "memory" in r:
        m = r["memory"]
        notes.append(
            f"driver {m['driver_peak_mib']:.0f} MiB, largest worker {m['worker_peak_mib']:.0f} MiB,"
            f" job {r['job_wall_s']:.1f}s of {r['wall_s']:.1f}s"
        )
    if r.get("attempts", 1) > 1:
        notes.append(f"Ray start-up timed out, {r['attempts']} attempts (last one timed)")
    if "reference" in r:
        notes.append(f"ref: {r['reference']} (CPU-time x{r['x_reference_cpu']:.2f})")
    pad = "n/a" if r.get("padding") is None else f"{r['padding']:.1%}"
    peak = "" if r.get("peak_mib") is None else f"{r['peak_mib']:,.0f}"
    ref = "" if "x_reference" not in r else f"{r['x_reference']:.2f}"
    return [
        r["row"],
        r["dtype"],
        f"{r['tokens_per_s']:,.0f}",
        f"{r['tokens_per_cpu_s']:,.0f}",
        f"{r['docs_per_s']:.2f}",
        f"{r['x_row1']:.2f}",
        ref,
        pad,
        peak,
        "; ".join(notes),
    ]


def _checks_lines(result: dict[str, Any]) -> list[str]:
    c = result["checks"]
    lines = []
    nv = c.get("ner_vs_pipeline")  # absent when the baselines were skipped
    for part in ("single_window_docs", "all_docs", "multi_window_docs") if nv else ():
        a = nv[part]
        lines.append(
            f"NER vs transformers pipeline, {part.replace('_', ' ')}: identical={a['identical']}"
            f" ({a['common']} common, {a['ours']} ours, {a['reference']} pipeline,"
            f" agreement {a['agreement']:.4f})"
        )
    for part, a in c.get("embed_vs_sentence_transformers", {}).items():
        lines.append(
            f"Embeddings vs sentence-transformers, {part.replace('_', ' ')}: cosine min {a['min']}"
            f" mean {a['mean']} over {a['windows']} windows"
        )
    for key, a in c.items():
        if key.startswith("ner_") and "_vs_" in key and key != "ner_vs_pipeline":
            lines.append(
                f"{key}: agreement {a['agreement']:.4f} ({a['common']} of {a['reference']})"
            )
        if key.startswith("embed_") and key != "embed_vs_sentence_transformers":
            lines.append(f"{key}: cosine min {a['min']} mean {a['mean']}")
    if "ray_vs_in_process" in c:
        e, v = c["ray_vs_in_process"]["entities"], c["ray_vs_in_process"]["vectors"]
        lines.append(
            f"Ray job vs in process: entities identical={e['identical']}, "
            f"vectors cosine min {v['min']}"
        )
    if "ray_error" in c:
        lines.append("Ray job FAILED: " + c["ray_error"].strip().splitlines()[-1])
    if "index_memory" in c:
        m = c["index_memory"]
        lines.append(
            f"Link index of {m['names']:,} names: built in {m['index_build_s']:.1f} s; "
            f"{m['mentions']} mentions encoded and searched in {m['encode_search_s']:.1f} s"
        )
        return lines
    lines.append(f"Window tokens counted alike in every row: {c.get('tokens_counted_alike')}")
    return lines


def _target_lines(result: dict[str, Any]) -> list[str]:
    mark = {True: "MET", False: "NOT MET", None: "not measured at that scale", "context": "context"}
    return [f"[{mark[t['met']]}] {t['target']}: {t['measured']}" for t in result["targets"]]


def _machine_line(m: dict[str, Any]) -> str:
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU"
    flags = " ".join(m["cpu_flags"]) or "none listed"
    return (
        f"{m['date_utc']} UTC; {m['cpu']}, {m['cores']} cores (flags: {flags}){gpu}; load average "
        f"{m['load_average']}; torch {m['torch']}, transformers {m['transformers']}, "
        f"sentence-transformers {m['sentence-transformers']}, ray {m['ray']}"
    )


def _corpus_line(c: dict[str, Any]) -> str:
    times = c.get("repeat", 1)
    copies = f" ({c['docs'] // times} distinct, each {times} times)" if times > 1 else ""
    return (
        f"{c['docs']} documents{copies}, {c['window_tokens']:,} window tokens in "
        f"{c['windows']} windows ({c['single_window_docs']} documents fit one window)"
    )


def text_report(result: dict[str, Any]) -> str:
    rows = [list(TABLE_HEAD)] + [_cells(r) for r in result["rows"]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(TABLE_HEAD) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    return "\n".join(
        [
            _machine_line(result["machine"]),
            _corpus_line(result["corpus"]),
            *lines,
            "",
            *_checks_lines(result),
            "",
            *_target_lines(result),
        ]
    )


def markdown_section(result: dict[str, Any], title: str, command: str) -> str:
    c = result["corpus"]
    table = ["| " + " | ".join(TABLE_HEAD) + " |", "|" + "---|" * len(TABLE_HEAD)]
    table += ["| " + " | ".join(_cells(r)) + " |" for r in result["rows"]]
    return "\n".join(
        [
            f"### {title}",
            "",
            f"Generated by `{command}`.",
            "",
            f"Machine: {_machine_line(result['machine'])}; load average after: "
            f"{result['load_average_after']}.",
            "",
            f"Corpus: {_corpus_line(c)}; NER head: {c['ner_head']}.",
            "",
            *table,
            "",
            *[f"- {line}" for line in _checks_lines(result)],
            "",
            *[f"- {line}" for line in _target_lines(result)],
        ]
    )


def scale_text(results: list[dict[str, Any]]) -> list[list[str]]:
    head = [
        "docs",
        "wall s",
        "job wall s",
        "docs/s (job)",
        "driver MiB",
        "worker MiB",
        "worker USS MiB",
        "all processes MiB",
        "tokenize",
        "inference",
        "write",
    ]
    rows = [head]
    for r in results:
        share = _phase_shares(r["operator_udf_s"])
        rows.append(
            [
                f"{r['docs']:,}",
                f"{r['wall_s']:.0f}",
                f"{r['job_wall_s']:.0f}",
                f"{r['job_docs_per_s']:,.0f}",
                f"{r['driver_peak_mib']:,.0f}",
                f"{r['worker_peak_mib']:,.0f}",
                f"{max(r['operator_max_uss_mib'].values(), default=0):,.0f}",
                f"{r['tree_peak_mib']:,.0f}",
                *(f"{share[k]:.0%}" for k in ("tokenize", "inference", "write")),
            ]
        )
    return rows


def _phase_shares(udf: dict[str, float]) -> dict[str, float]:
    """UDF seconds per phase: reading is fused into the first tokenizer by Ray Data."""
    phase = {"tokenize": 0.0, "inference": 0.0, "write": 0.0}
    for op, s in udf.items():
        if "Tokenize" in op:
            phase["tokenize"] += s
        elif "NerStage" in op or "EmbedStage" in op:
            phase["inference"] += s
        elif "StageWriter" in op:
            phase["write"] += s
    total = sum(phase.values()) or 1.0
    return {k: v / total for k, v in phase.items()}


def scale_markdown(results: list[dict[str, Any]], machine: dict[str, Any], command: str) -> str:
    rows = scale_text(results)
    table = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    table += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(
        [
            "### Scale: generated short documents, tiny random model",
            "",
            f"Generated by `{command}`.",
            "",
            f"Machine: {_machine_line(machine)}.",
            "",
            *table,
            "",
            "wall s: the whole process, Ray start-up included; job wall s and docs/s: the "
            "dataset's execution. Memory: peak resident set of the driver, of the largest Ray "
            "worker, and of all the job's processes at one instant; a worker's resident set "
            "also counts the pages of Ray's shared object store it has touched, so *worker "
            "USS* gives the largest Ray Data operator's own memory (unique set size, from "
            "ray-data.log). tokenize / inference / "
            "write: shares of the time spent inside each Ray Data operator's function, from "
            "the session's ray-data.log (reading is fused into the first tokenizer).",
        ]
    )


ABOUT = """### How these numbers are made

`python -m jobs.bench` runs every row one after the other in one process, on the same
documents and weights. Throughput is in *window tokens*: each document is cut into the
job's windows (`--max-length` tokens, `--stride` tokens of overlap, the last window
aligned to the document's end) and every window counts its tokens plus its special
tokens, padding excluded; every row is credited that same count, so the ratios are
ratios of time. Model loading and a warm-up are outside the timings (the first 4
documents on a CPU; on a GPU the whole corpus once, since a pass of a new shape first
picks its kernels, which a long job pays once), except in the `jobs.annotate` row, which
times the whole process on a fresh local Ray (start-up included). *tokens/CPU-s* divides
by the CPU seconds of all the row's threads (and, for the Ray row, of all the job's
processes): on a machine shared with other work it moves much less than the wall-clock
rate, so the load average is printed with each run. *x ref* compares our NER rows with
the transformers pipeline, our embedding rows with sentence-transformers, and the Ray
job with our two stages in process. *padding* is the share of token positions computed
that were padding, in each row's own forward passes. The NER model is the encoder with a
token-classification head initialised at random (seed 0), as the issue's reference
figures used; entity checks compare exact (document, start, end, label). The pipeline
and the job only see the same windows in documents that fit one window (in longer ones
the pipeline's last window is the remainder, ours is end-aligned), so identity is
checked there; agreement on longer documents is reported. sentence-transformers is given
the text of each of the job's windows (whole documents it would truncate). Our stage
rows time three parts, as the job runs them in three kinds of actor: tokenizing, the
stage itself (the inference actor's code: windows, forward passes, decoding; *stage
alone* is its rate, and the GPU target's), and building the output rows (the writer's);
in tables whose notes show no rows part (made before 2026-11-27) the stage time includes
it."""


def update_markdown(path: Path, key: str, section: str) -> None:
    """Replace the section marked ``key`` in ``path`` (append it if absent), and the
    method section (``about``), which a file gets once, before its first section."""
    text = path.read_text() if path.exists() else "## Benchmark results\n"
    text = _upsert(text, key, section)
    about = ABOUT.rstrip("\n")
    if _marker("about") not in text:
        first = text.index("<!-- bench:")  # the section above was just put in
        text = f"{text[:first]}{_block('about', about)}\n\n{text[first:]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_upsert(text, "about", about))


def _marker(key: str, end: bool = False) -> str:
    return f"<!-- {'/' if end else ''}bench:{key} -->"


def _block(key: str, section: str) -> str:
    return f"{_marker(key)}\n{section}\n{_marker(key, end=True)}"


def _upsert(text: str, key: str, section: str) -> str:
    start, end = _marker(key), _marker(key, end=True)
    if start in text and end in text:
        before, rest = text.split(start, 1)
        return before + _block(key, section) + rest.split(end, 1)[1]
    return text.rstrip("\n") + "\n\n" + _block(key, section) + "\n"
