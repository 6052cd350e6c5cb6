"""Model sources, the per-node cache, loading, and per-family defaults."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from pipeline.config import POOLINGS
from pipeline.models import families
from pipeline.storage import files as storage

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")
PROVENANCE = "_provenance.json"  # written by pull_model next to a pinned copy


def default_cache_dir() -> Path:
    return Path(os.environ.get("BIOMED_ANNOTATE_CACHE", Path.home() / ".cache" / "biomed-annotate"))


def resolve_model_dir(source: str, cache_dir: Path | None = None) -> Path:
    """A local folder holding the model named by ``source``.

    Local folders are used as they are; an ``s3://`` (or other fsspec) prefix is
    copied once into the node's cache (keyed by the URI and its ``_provenance.json``);
    anything else is taken as a hub id and fetched through ``huggingface_hub`` where the
    hub is reachable.
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
    fs, path = storage.filesystem(uri)
    if not fs.exists(path):
        raise FileNotFoundError(f"model prefix not found: {uri}")
    # A pinned copy's provenance joins the key, so a prefix re-pulled with another
    # model never answers from a node's stale cache.
    marker = storage.join(uri, PROVENANCE)
    pinned = json.dumps(storage.read_json(marker), sort_keys=True) if fs.exists(marker) else ""
    key = hashlib.sha256((uri.rstrip("/") + "\n" + pinned).encode()).hexdigest()[:16]
    dest = cache_dir / "models" / key
    if (dest / ".complete").exists():
        return dest
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


def model_files(model_dir: Path) -> dict[str, Path]:
    """The model's files by relative POSIX path, in path order: hidden files and folders
    (caches, ``.complete``) and ``_provenance.json`` left out."""
    out = {}
    for p in sorted(model_dir.rglob("*")):
        rel = p.relative_to(model_dir)
        if any(part.startswith(".") for part in rel.parts) or rel.as_posix() == PROVENANCE:
            continue
        if p.is_file():
            out[rel.as_posix()] = p
    return out


def weights_hash(model_dir: Path) -> str:
    """sha256 over the weight files' names and bytes, in name order."""
    digest = hashlib.sha256()
    for rel, p in model_files(model_dir).items():
        if p.suffix not in WEIGHT_SUFFIXES:
            continue
        digest.update(rel.encode())
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


def hidden_size(config: dict[str, Any]) -> int | None:
    """The width of the model's hidden states, under any of the names configs use."""
    for key in ("hidden_size", "d_model", "dim", "n_embd"):
        if isinstance(config.get(key), int):
            return int(config[key])
    return None


def default_max_length(config: dict[str, Any]) -> int:
    """Tokens per window (special tokens included) from the model config, never from
    the tokenizer's ``model_max_length`` (1e30 for several biomedical checkpoints);
    the per-family rule is :func:`pipeline.models.families.window_length`."""
    return families.window_length(config)


# sentence-transformers' pooling flags, in its own order of precedence.
ST_POOLING_MODES = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


def declared_pooling(model_dir: Path) -> str | None:
    """The pooling a sentence-transformers folder declares in its Pooling module's
    ``config.json`` (``cls``, ``mean``, or another mode's name; several joined by ``+``)."""
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
            if data.get("pooling_mode"):  # newer sentence-transformers write one name
                return str(data["pooling_mode"])
            modes = [name for key, name in ST_POOLING_MODES.items() if data.get(key)]
            return "+".join(modes) or None
    return None


def names_sapbert(model_dir: Path, source: str) -> bool:
    """Whether the model is a SapBERT checkpoint: its source, folder, pulled-from source
    (``_provenance.json``) or ``config.json`` ``_name_or_path`` says SapBERT."""
    names = [source, str(model_dir)]
    for meta, key in ((PROVENANCE, "source"), ("config.json", "_name_or_path")):
        if (model_dir / meta).exists():
            names.append(str(json.loads((model_dir / meta).read_text()).get(key) or ""))
    return any("sapbert" in n.lower() for n in names)


def default_pooling(model_dir: Path, source: str) -> str:
    """Declared pooling, else ``cls`` for SapBERT (entity-name encoders trained on the
    [CLS] vector), else mean. Raises ``ValueError`` for a declared mode not computed here."""
    declared = declared_pooling(model_dir)
    if declared:
        if declared not in POOLINGS:
            raise ValueError(
                f"model {source} declares {declared!r} pooling, which this job does not "
                f"compute; pass --pooling with one of {', '.join(POOLINGS)}"
            )
        return declared
    return "cls" if names_sapbert(model_dir, source) else "mean"


def model_revision(model_dir: Path) -> str | None:
    """The revision a model folder was pinned at: from ``_provenance.json`` (a pulled
    copy), else the commit a hub cache snapshot folder is named by, else None."""
    prov = model_dir / PROVENANCE
    if prov.exists():
        return json.loads(prov.read_text()).get("revision")
    return model_dir.name if "snapshots" in model_dir.parts else None


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
    tokenizer_sha256: str = ""  # models with equal digests share one tokenize stage


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
    # A folder without tokenizer files still loads: as an empty tokenizer that turns every
    # word into the unknown token, which would annotate a corpus with nothing, silently.
    if len(tok.get_vocab()) <= len(set(tok.all_special_tokens)):
        raise ValueError(
            f"model {model_dir} has no tokenizer vocabulary (tokenizer.json, vocab.txt, "
            "vocab.json or a SentencePiece model); copy the checkpoint's tokenizer files"
        )
    return tok


@dataclass(frozen=True)
class TokenizerDef:
    """A fast tokenizer as the driver resolved it: the Rust tokenizer's JSON definition,
    set to encode whole texts as ``tokenizer(texts, truncation=False)`` does. Actors
    rebuild it with the tokenizers library alone: no transformers (and so no torch)
    import, about 5 s and 200 MiB less per tokenizer actor."""

    json: str
    split_special_tokens: bool = False  # literal "[SEP]" in a text: split, not special

    @classmethod
    def of(cls, tokenizer: Any) -> TokenizerDef:
        backend = copy.deepcopy(tokenizer.backend_tokenizer)
        backend.no_truncation()
        backend.no_padding()
        return cls(backend.to_str(), bool(getattr(tokenizer, "split_special_tokens", False)))

    def build(self) -> Any:
        from tokenizers import Tokenizer

        backend = Tokenizer.from_str(self.json)
        backend.encode_special_tokens = self.split_special_tokens
        return backend

    @cached_property  # the definition is hundreds of kB of JSON
    def sha256(self) -> str:
        """Equal for tokenizers that encode alike (vocabulary, normaliser, pre-tokeniser,
        model), wherever their files lie."""
        spec = {**json.loads(self.json), "split_special_tokens": self.split_special_tokens}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def load_model(
    model_dir: Path, task: str, trust_remote_code: bool = False, allow_pickle: bool = False
) -> Any:
    """Load the encoder for ``task`` ("ner" or "embed"), safetensors first, in eval mode."""
    from transformers import AutoModel, AutoModelForTokenClassification
    from transformers.utils import logging as hf_logging

    # Each actor would print its weight-loading bar and a load-report table into the job
    # log; what matters of the report (weights left random) is logged as one line.
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    check_safetensors(model_dir, allow_pickle)
    cls = AutoModelForTokenClassification if task == "ner" else AutoModel
    model, info = cls.from_pretrained(
        str(model_dir),
        local_files_only=True,
        trust_remote_code=trust_remote_code,
        use_safetensors=None if allow_pickle else True,
        output_loading_info=True,
    )
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        log.warning(
            "%s model %s: %d weights are not in the checkpoint and start random (%s)",
            task, model_dir.name, len(missing), shown,
        )  # fmt: skip
    return model.eval()
