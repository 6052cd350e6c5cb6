"""Side-by-side throughput benchmark, in one process, on the same documents and weights.

    python -m jobs.bench --docs URI [--model M] [--limit N] [--json OUT] [--markdown OUT]
    python -m jobs.bench --docs URI --repeat 9 --skip-baselines --dtype float32
    python -m jobs.bench --scale 20000,100000,200000 [--markdown OUT]
    python -m jobs.bench --docs URI --link-dictionary URI [--link-names N]

Rows: transformers' token-classification pipeline (at its best batch size),
sentence-transformers ``encode``, this project's NER and embedding stages in process
(one row per --dtype), and the full ``jobs.annotate`` on a fresh local Ray. Rates are
in window tokens: the job's windows over each document, special tokens included,
padding excluded; every row is credited the same count.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import tempfile
from pathlib import Path

from pipeline.bench.harness import BenchSettings
from pipeline.config import DECODINGS
from pipeline.sample import defaults


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jobs.bench",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--docs", help="Parquet file or prefix with doc_id and text columns")
    p.add_argument(
        "--model",
        default=None,
        help="encoder folder (default: the packaged all-MiniLM-L6-v2); NER gets a random "
        "token-classification head on it (seed 0) unless --ner-model is given; with "
        "--gpu-model only its tokenizer is used",
    )
    p.add_argument("--ner-model", help="a token-classification model folder to use as is")
    p.add_argument("--limit", type=int, help="first N usable documents only")
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run on the documents this many times over (distinct ids): a corpus of the size "
        "a target names (the Ray row's 5,000 documents) from a smaller data set",
    )
    p.add_argument("--json", help="write every number, check and target here")
    p.add_argument(
        "--markdown",
        help="update this Markdown file's section for this corpus (e.g. docs/benchmarks.md)",
    )
    p.add_argument("--section", help="section key in --markdown (default: the --docs name)")
    p.add_argument(
        "--dtype",
        default="float32,bfloat16",
        help="comma list: one NER and one embedding row per dtype for our stages",
    )
    p.add_argument(
        "--baseline-dtype",
        default="float32",
        choices=("float32", "bfloat16"),
        help="precision of the transformers and sentence-transformers rows",
    )
    p.add_argument("--max-length", type=int, default=512, help="window, tokens incl. special")
    p.add_argument("--stride", type=int, default=128, help="window overlap, tokens")
    p.add_argument(
        "--batch-tokens",
        type=int,
        default=BenchSettings.batch_tokens,
        help="our stages' tokens per forward pass (default: what the job picks for the model "
        "on this machine)",
    )
    p.add_argument(
        "--docs-per-batch",
        type=int,
        default=BenchSettings.docs_per_batch,
        help="documents per stage call and per Ray batch (default: the size the job picks "
        "for this corpus)",
    )
    p.add_argument(
        "--hf-batch-sizes", default="1,8,32", help="pipeline batch sizes to try (fastest wins)"
    )
    p.add_argument(
        "--trial-docs", type=int, default=48, help="documents each pipeline batch size is tried on"
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile our stages' encoders (and the job's); compilation happens in the "
        "warm-up, outside the timings",
    )
    p.add_argument(
        "--decoding",
        choices=DECODINGS,
        default=BenchSettings.decoding,
        help="NER decoding of our stages and the job (default greedy: the transformers "
        "pipeline's, so that their entities can be compared; viterbi is the job's default)",
    )
    p.add_argument("--skip-ray", action="store_true", help="leave out the jobs.annotate row")
    p.add_argument(
        "--link-dictionary",
        help="only the linking rows: the job without and with linking against this "
        "dictionary (names embedded, then cached), and the memory of a --link-names index",
    )
    p.add_argument(
        "--link-names",
        type=int,
        default=1_000_000,
        help="names of the index whose memory is measured (the dictionary's names repeated "
        "with suffixes, random unit vectors)",
    )
    p.add_argument(
        "--context-only",
        action="store_true",
        help="only the context stage's row (sentences, sections, ConText) over the NER "
        "stage's entities (first --dtype): its speed on a whole corpus",
    )
    p.add_argument(
        "--skip-baselines",
        action="store_true",
        help="leave out the transformers, sentence-transformers and bare-forward rows: only "
        "our stages in process and the job (the Ray target at corpus sizes where every "
        "contender would take hours)",
    )
    p.add_argument(
        "--gpu-model",
        choices=("bert-base", "minilm-l6"),
        help="benchmark a random-weight BERT-base (110M parameters) or MiniLM-L6-shaped model "
        "with --model's tokenizer instead of --model itself (no weights to ship); reports "
        "model FLOP/s and MFU on a GPU",
    )
    p.add_argument(
        "--scale",
        help="comma list of corpus sizes: run the full job on that many generated short "
        "documents with a tiny random model, recording memory and the time split",
    )
    p.add_argument(
        "--render",
        help="print and write --markdown from a saved --json result (e.g. one made on a "
        "GPU machine) instead of running",
    )
    p.add_argument("--workdir", help="folder for models, inputs and outputs (default: a temp dir)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # load reports of the deliberately random heads
    hf_logging.disable_progress_bar()
    if args.render:
        return _render(args)
    if not args.docs and not args.scale:
        print("error: pass --docs, --scale or --render", file=sys.stderr)
        return 2
    settings = BenchSettings(
        max_length=args.max_length,
        stride=args.stride,
        batch_tokens=args.batch_tokens,
        docs_per_batch=args.docs_per_batch,
        hf_batch_sizes=tuple(int(x) for x in args.hf_batch_sizes.split(",")),
        trial_docs=args.trial_docs,
        compile_model=args.compile,
        decoding=args.decoding,
        # a compiled model specialises on some shapes (one-window passes): warm up on more
        warmup_docs=64 if args.compile else BenchSettings.warmup_docs,
    )
    model = args.model or defaults.default_embed_model()
    command = "python -m jobs.bench " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        if args.scale:
            return _scale(args, settings, model, workdir, command)
        from pipeline.bench import suite as bench_suite

        request = bench_suite.BenchRequest(
            docs_uri=args.docs,
            model_dir=model,
            workdir=workdir,
            settings=settings,
            ner_model_dir=args.ner_model,
            limit=args.limit,
            dtypes=tuple(args.dtype.split(",")),
            baseline_dtype=args.baseline_dtype,
            skip_ray=args.skip_ray,
            baselines=not args.skip_baselines,
            repeat=args.repeat,
            gpu_model=args.gpu_model,
            context_only=args.context_only,
            link_dictionary=args.link_dictionary,
            link_names=args.link_names,
        )
        result = bench_suite.run_suite(request)
        result["command"] = command
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1, default=str))
        _report(result, args)
    return 0


def _render(args: argparse.Namespace) -> int:
    from pipeline.bench import suite as bench_suite

    result = json.loads(Path(args.render).read_text())
    if "scale" in result:
        return _report_scale(result, args)
    rows, corpus = result["rows"], result["corpus"]
    result["targets"] = bench_suite.targets(
        rows, result["checks"], corpus["docs"], rows[0]["dtype"]
    )
    _report(result, args)
    return 0


def _report(result: dict, args: argparse.Namespace) -> None:
    from pipeline.bench import report as bench_report

    print(bench_report.text_report(result))
    if args.markdown:
        corpus = result["corpus"]
        key = args.section or Path(corpus["uri"].rstrip("/")).name
        model = Path(corpus["encoder"]).name
        title = key + (f" ({model}, random weights)" if model in ("bert-base", "minilm-l6") else "")
        section = bench_report.markdown_section(result, title, result["command"])
        bench_report.update_markdown(Path(args.markdown), key, section)


def _scale(
    args: argparse.Namespace, settings: BenchSettings, model: str, workdir: Path, command: str
) -> int:
    from pipeline.bench import suite as bench_suite
    from pipeline.bench.ray_rows import scale_runs

    sizes = [int(x) for x in args.scale.split(",")]
    machine = bench_suite.machine_info()
    results = scale_runs(sizes, model, settings, workdir)
    result = {"machine": machine, "scale": results, "command": command}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return _report_scale(result, args)


def _report_scale(result: dict, args: argparse.Namespace) -> int:
    from pipeline.bench import report as bench_report

    rows = bench_report.scale_text(result["scale"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print("\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows))
    if args.markdown:
        section = bench_report.scale_markdown(result["scale"], result["machine"], result["command"])
        bench_report.update_markdown(Path(args.markdown), args.section or "scale", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
