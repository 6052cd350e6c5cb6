"""Copy a model once, pinned, to the team's storage (``python -m jobs.models pull``).

A pulled folder holds the model's files and ``_provenance.json``: the source, the
revision, the weights hash exactly as run.json records it, and every file's size and
sha256. Pulling the same model again changes nothing; pulling over another model is
refused unless forced. The provenance is written last, so its presence means the copy
is whole.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.models import loading as models
from pipeline.models.loading import PROVENANCE, WEIGHT_SUFFIXES
from pipeline.storage import files as storage

log = logging.getLogger(__name__)

# Other frameworks' and runtimes' weights: never loaded by the job, often larger than it.
HUB_IGNORE = [
    "*.h5",
    "*.msgpack",
    "*.ot",
    "*.onnx",
    "onnx/*",
    "openvino/*",
    "coreml/*",
    "tf_model*",
    "flax_model*",
    "rust_model*",
]


class PullRefused(ValueError):
    """The destination holds another model, or files that are not a pulled model."""


class SourceUnavailable(RuntimeError):
    """The hub could not give the model (no network, unknown id or revision, gated)."""


@dataclass(frozen=True)
class PullResult:
    action: str  # "copied" or "unchanged"
    provenance: dict[str, Any]


def provenance(model_dir: Path, source: str, revision: str | None) -> dict[str, Any]:
    """Source, revision, weights hash (as :func:`models.weights_hash`) and every file's
    size in bytes and sha256, reading each file once."""
    weights = hashlib.sha256()
    files: dict[str, dict[str, Any]] = {}
    for rel, path in models.model_files(model_dir).items():
        digest = hashlib.sha256()
        is_weight = path.suffix in WEIGHT_SUFFIXES
        if is_weight:
            weights.update(rel.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
                if is_weight:
                    weights.update(block)
        files[rel] = {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}
    return {
        "source": source,
        "revision": revision,
        "weights_sha256": weights.hexdigest(),
        "files": files,
    }


def fetch_source(source: str, revision: str | None, work_dir: Path) -> tuple[Path, str | None]:
    """A local folder with the model named by ``source``, and its revision.

    Folders and ``s3://`` prefixes keep the revision of their own ``_provenance.json``;
    a hub id is downloaded at ``revision`` (default: the main branch) and pinned to the
    commit it resolved to.
    """
    local = Path(source.removeprefix("file://")).expanduser()
    if local.is_dir() or "://" in source:
        if revision is not None:
            raise ValueError(
                f"--revision pins hub ids only; {source} is a folder or prefix, whose own "
                f"{PROVENANCE} revision is kept"
            )
        if not local.is_dir():
            fs, path = storage.filesystem(source)
            if not fs.exists(path):
                raise FileNotFoundError(f"model prefix not found: {source}")
            local = work_dir / "source"
            fs.get(path.rstrip("/") + "/", str(local), recursive=True)
        if not (local / "config.json").exists():
            raise FileNotFoundError(f"no config.json in {source}: not a Hugging Face model folder")
        return local, models.model_revision(local)
    if local.suffix or source.startswith((".", "/")):
        raise FileNotFoundError(f"model folder not found: {source}")
    from huggingface_hub import snapshot_download

    try:
        snapshot = Path(
            snapshot_download(
                source,
                revision=revision,
                cache_dir=str(work_dir / "hub"),
                ignore_patterns=HUB_IGNORE,
            )
        )
    except Exception as exc:  # offline, unknown repo or revision, gated, ...
        raise SourceUnavailable(
            f"could not download {source} from the Hugging Face hub "
            f"({type(exc).__name__}: {exc}); pull from a local folder or s3:// copy instead"
        ) from exc
    return snapshot, snapshot.name  # snapshot folders are named by the commit


def read_provenance(uri: str) -> dict[str, Any] | None:
    path = storage.join(uri, PROVENANCE)
    return storage.read_json(path) if storage.exists(path) else None


def pull_model(
    source: str, dest: str, revision: str | None = None, force: bool = False
) -> PullResult:
    """Copy the model ``source`` (folder, fsspec URI or hub id) to ``dest`` (folder or
    fsspec URI) with its ``_provenance.json``, unless ``dest`` already holds it.

    Raises ``PullRefused`` when ``dest`` holds anything else and ``force`` is false.
    """
    existing = read_provenance(dest) or {}
    pinned = (existing.get("source"), existing.get("revision"))
    if revision and pinned == (source, revision):
        return PullResult("unchanged", existing)  # the same commit of the same hub repo
    with tempfile.TemporaryDirectory(prefix="pull-") as tmp:
        local, resolved = fetch_source(source, revision, Path(tmp))
        prov = provenance(local, source, resolved)
        if existing.get("files") == prov["files"]:
            return PullResult("unchanged", existing)
        if not force:
            if existing:
                raise PullRefused(
                    f"{dest} holds another model (pulled from {existing.get('source')}, "
                    f"revision {existing.get('revision')}); pass --force to replace it"
                )
            if storage.list_files(dest):
                raise PullRefused(
                    f"{dest} holds files but no {PROVENANCE} (an interrupted pull, or not a "
                    "pulled model); pass --force to replace them"
                )
        storage.remove(dest, recursive=True)
        fs, root = storage.filesystem(dest)
        for rel, path in models.model_files(local).items():
            target = posixpath.join(root, rel)
            fs.makedirs(posixpath.dirname(target), exist_ok=True)
            fs.put_file(str(path), target)
        storage.write_json(storage.join(dest, PROVENANCE), prov)
    log.info("pulled %s (revision %s) to %s", source, resolved, dest)
    return PullResult("copied", prov)
