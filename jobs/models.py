"""Model housekeeping: copy a model once, pinned, to the team's storage.

    python -m jobs.models pull SOURCE DEST [--revision R] [--force]

SOURCE is a hub id (where the hub is reachable), a local folder or an s3:// prefix;
DEST a local folder or an s3:// prefix. Actors then load DEST (``--ner-model DEST``),
not the hub, and run.json records the revision and weights hash pinned here.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pipeline.models.pull import PullRefused, SourceUnavailable, pull_model


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jobs.models", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    pull = sub.add_parser(
        "pull",
        help="copy a model to DEST once, with _provenance.json",
        description="Copy SOURCE to DEST with _provenance.json (source, revision, weights "
        "sha256, every file's size and sha256). Does nothing if DEST already holds the "
        "same files; refuses if it holds anything else, unless --force.",
    )
    pull.add_argument("source", help="hub id, local folder, or s3:// prefix")
    pull.add_argument("dest", help="local folder or s3:// prefix")
    pull.add_argument(
        "--revision",
        help="hub branch, tag or commit (hub ids only; the commit it resolves to is recorded)",
    )
    pull.add_argument(
        "--force", action="store_true", help="replace whatever DEST holds (another model)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = pull_model(args.source, args.dest, args.revision, args.force)
    except (PullRefused, SourceUnavailable, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    prov = result.provenance
    size = sum(f["bytes"] for f in prov["files"].values())
    verb = "copied" if result.action == "copied" else "already there, unchanged:"
    print(
        f"{verb} {prov['source']} (revision {prov['revision']}) at {args.dest}: "
        f"{len(prov['files'])} files, {size / 1e6:.1f} MB, weights sha256 {prov['weights_sha256']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
