"""Model sources, the per-node cache, loading, and per-family defaults."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import storage
from pipeline.config import DEFAULT_MAX_WINDOW

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")
# Families whose position tables are meant to be used beyond 512 tokens.
LONG_CONTEXT_TYPES = {"longformer", "big_bird", "modernbert", "nomic_bert"}
# Families whose position ids start after the padding index (RoBERTa: 514 → 512).
OFFSET_POSITION_TYPES = {"roberta", "xlm-roberta", "camembert", "longformer", "bertweet"}


def default_cache_dir() -> Path:
    return Path(os.environ.get("BIOMED_ANNOTATE_CACHE", Path.home() / ".cache" / "biomed-annotate"))


def resolve_model_dir(source: str, cache_dir: Path | None = None) -> Path:
    """A local folder holding the model named by ``source``.

    Local folders are used as they are; an ``s3://`` (or other fsspec) prefix is
    copied once into the node's cache (keyed by the URI); anything else is taken
    as a hub id and fetched through ``huggingface_hub`` where the hub is reachable.
    """
    local = Path(source.removeprefix("file://")).expanduser()
    if local.is_dir():
        return local.resolve()
    if "://" in source:
        return _download_prefix(source, cache_dir or default_cache_dir())
    if local.suffix or source.startswith((".", "/")):
        raise FileNotFoundError(f"model folder not found: {source}")
    from huggingface_hub import snapshot_download

    return Path(
        snapshot_download(source, cache_dir=str((cache_dir or default_cache_dir()) / "hub"))
    )


def _download_prefix(uri: str, cache_dir: Path) -> Path:
    key = hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:16]
    dest = cache_dir / "models" / key
    if (dest / ".complete").exists():
        return dest
    fs, path = storage.filesystem(uri)
    if not fs.exists(path):
        raise FileNotFoundError(f"model prefix not found: {uri}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Download into a private folder, then rename: concurrent actors on one node
    # never see a half-copied model.
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=dest.parent))
    fs.get(path.rstrip("/") + "/", str(tmp), recursive=True)
    (tmp / ".complete").write_text(uri)
    try:
        os.replace(tmp, dest)
    except OSError:  # another process finished first
        if not (dest / ".complete").exists():
            raise
    return dest


def weights_hash(model_dir: Path) -> str:
    """sha256 over the weight files' names and bytes, in name order."""
    digest = hashlib.sha256()
    files = sorted(p for p in model_dir.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    for p in files:
        digest.update(str(p.relative_to(model_dir)).encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def check_safetensors(model_dir: Path, allow_pickle: bool) -> None:
    """Refuse pickle-only checkpoints (loading them can run arbitrary code)."""
    names = {p.suffix for p in model_dir.rglob("*") if p.is_file()}
    if ".safetensors" in names or allow_pickle:
        return
    raise ValueError(
        f"model folder {model_dir} has no .safetensors weights, only pickle checkpoints, which "
        "can run code when loaded; convert it to safetensors, or pass --allow-pickle if you "
        "trust its source"
    )


def read_config(model_dir: Path) -> dict[str, Any]:
    with open(model_dir / "config.json") as f:
        return json.load(f)


def default_max_length(config: dict[str, Any]) -> int:
    """Tokens per window (special tokens included) from the model config, never from
    the tokenizer's ``model_max_length`` (1e30 for several biomedical checkpoints)."""
    model_type = config.get("model_type", "")
    positions = config.get("max_position_embeddings") or DEFAULT_MAX_WINDOW
    if model_type in OFFSET_POSITION_TYPES:
        positions -= (config.get("pad_token_id") or 1) + 1
    if model_type in LONG_CONTEXT_TYPES:
        return int(positions)
    return int(min(positions, DEFAULT_MAX_WINDOW))


def declared_pooling(model_dir: Path) -> str | None:
    """The pooling a sentence-transformers folder declares in ``1_Pooling/config.json``."""
    modules = model_dir / "modules.json"
    pooling_dirs = []
    if modules.exists():
        for m in json.loads(modules.read_text()):
            if m.get("type", "").endswith("Pooling"):
                pooling_dirs.append(model_dir / m.get("path", ""))
    pooling_dirs.append(model_dir / "1_Pooling")
    for d in pooling_dirs:
        cfg = d / "config.json"
        if cfg.exists():
            data = json.loads(cfg.read_text())
            if data.get("pooling_mode_cls_token"):
                return "cls"
            if data.get("pooling_mode_mean_tokens"):
                return "mean"
    return None


def default_pooling(model_dir: Path, source: str) -> str:
    """Declared pooling, else ``cls`` for SapBERT-style entity-name encoders, else mean."""
    declared = declared_pooling(model_dir)
    if declared:
        return declared
    if "sapbert" in source.lower() or "sapbert" in str(model_dir).lower():
        return "cls"
    return "mean"


@dataclass(frozen=True)
class ModelInfo:
    """What the driver resolved about one model; recorded in run.json."""

    source: str
    local_dir: str
    model_type: str
    max_length: int
    weights_sha256: str
    revision: str | None
    labels: dict[int, str] | None = None
    pooling: str | None = None
    dim: int | None = None


def load_tokenizer(model_dir: Path, trust_remote_code: bool = False) -> Any:
    """The model's fast tokenizer (offset mappings need one)."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the long-input warning would fire for every document
    tok = AutoTokenizer.from_pretrained(
        str(model_dir), local_files_only=True, trust_remote_code=trust_remote_code
    )
    if not tok.is_fast:
        raise ValueError(f"model {model_dir} has no fast tokenizer; offsets need tokenizer.json")
    return tok


def load_model(
    model_dir: Path, task: str, trust_remote_code: bool = False, allow_pickle: bool = False
) -> Any:
    """Load the encoder for ``task`` ("ner" or "embed"), safetensors first, in eval mode."""
    from transformers import AutoModel, AutoModelForTokenClassification

    check_safetensors(model_dir, allow_pickle)
    cls = AutoModelForTokenClassification if task == "ner" else AutoModel
    model = cls.from_pretrained(
        str(model_dir),
        local_files_only=True,
        trust_remote_code=trust_remote_code,
        use_safetensors=None if allow_pickle else True,
    )
    return model.eval()
