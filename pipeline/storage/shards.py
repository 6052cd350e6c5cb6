"""Shards on the output side: the key a shard's files are named by, and which staged
parts of the shards in flight are complete. The folder itself is ``output.OutputFolder``.
"""

from __future__ import annotations

import hashlib
import posixpath
import re

from pipeline.storage import files as storage


def shard_key(shard_uri: str, input_uri: str) -> str:
    """A file-name-safe key for a shard, derived from its path under the input root,
    so the same input always maps to the same output names."""
    root = storage.filesystem(input_uri)[1].rstrip("/")
    path = storage.filesystem(shard_uri)[1]
    rel = path[len(root) :].lstrip("/") if path.startswith(root + "/") else ""
    rel = rel or posixpath.basename(path)
    stem = rel.removesuffix(".parquet")
    readable = stem.replace("/", "__")  # two paths of the _READABLE form never share one
    if _READABLE.fullmatch(stem) and len(readable) <= 120:
        return readable
    safe = re.sub(r"[^A-Za-z0-9._=-]+", "__", stem).strip("_.")  # "." first: a hidden file
    # Names the key cannot spell out (spaces, other scripts, "__", very long) keep a hash
    # of the real path, so two shards never share a key.
    return (safe[:100] or "shard") + "-" + hashlib.sha1(stem.encode()).hexdigest()[:12]


# Path parts of letters, digits and ._=-, none starting with "." or "_", ending with
# "_" or holding "__": joined by "__" they are one key each, read back unambiguously.
_PART = r"(?![._])(?:(?!__)[A-Za-z0-9._=-])*(?<!_)"
_READABLE = re.compile(rf"{_PART}(?:/{_PART})*")


class StagedParts:
    """Which parts (staged batches) of each shard the writer has reported, until the
    shard is complete. A complete shard's parts are handed over once and forgotten, so
    this holds the batches of the shards in flight, not of the corpus; a part reported
    again (Ray ran its batch twice, overwriting the same files) counts once."""

    def __init__(self, expected_docs: dict[str, int]) -> None:
        self._expected = expected_docs
        self._parts: dict[str, dict[str, None]] = {}  # insertion-ordered set per shard
        self._docs: dict[str, int] = {}
        self._complete: set[str] = set()

    def add(self, shard: str, part: str, n_docs: int) -> tuple[bool, list[str] | None]:
        """Record one part of ``shard`` holding ``n_docs`` documents. Returns whether the
        part is new, and the shard's parts when this part completed it (else None)."""
        if shard in self._complete:
            return False, None
        parts = self._parts.setdefault(shard, {})
        if part in parts:
            return False, None
        parts[part] = None
        self._docs[shard] = self._docs.get(shard, 0) + n_docs
        if self._docs[shard] != self._expected[shard]:
            return True, None
        self._complete.add(shard)
        del self._docs[shard], self._parts[shard]
        return True, list(parts)

    def staged_docs(self, shard: str) -> int:
        """Documents staged so far of a shard not yet complete."""
        return self._docs.get(shard, 0)

    def in_flight(self) -> int:
        """Parts held for shards not yet complete."""
        return sum(len(p) for p in self._parts.values())
