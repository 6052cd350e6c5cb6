"""CPU stage: tokenize whole documents once, with character offsets and word ids."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import schemas as S
from pipeline.models import loading as models


def special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after one sequence ([CLS] … [SEP], <s> … </s>)."""
    enc = tokenizer("a", add_special_tokens=True, return_special_tokens_mask=True)
    ids, mask = enc["input_ids"], enc["special_tokens_mask"]
    content = [i for i, m in enumerate(mask) if not m]
    if not content:
        return [], []
    return ids[: content[0]], ids[content[-1] + 1 :]


def list_column(values: list[np.ndarray], dtype: pa.DataType) -> pa.Array:
    """A ``list<dtype>`` array from per-row numpy arrays, without per-element Python work."""
    lengths = np.fromiter((len(v) for v in values), dtype=np.int64, count=len(values))
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.concatenate(values) if values else np.zeros(0)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=dtype))


def column_arrays(table: pa.Table, name: str, dtype=np.int64) -> list[np.ndarray]:
    """The rows of a ``list<int>`` column as numpy arrays (views of one flat buffer)."""
    col = table.column(name).combine_chunks()
    offsets = col.offsets.to_numpy()
    flat = col.values.to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    start = offsets[0]
    return [flat[a - start : b - start] for a, b in zip(offsets[:-1], offsets[1:])]


class Tokenize:
    """Adds ``_<role>_ids``, ``_<role>_tok_start``, ``_<role>_tok_end``, ``_<role>_word``
    for each of ``roles`` (models that share this tokenizer tokenize once): the whole
    document's tokens (no special tokens, no truncation), their character offsets into the
    original text, and their word index (-1 for none)."""

    def __init__(self, roles: str | Sequence[str], tokenizer: models.TokenizerDef) -> None:
        self.roles = (roles,) if isinstance(roles, str) else tuple(roles)
        self.backend = tokenizer.build()

    @classmethod
    def of_model(
        cls, roles: str | Sequence[str], model_dir: str, trust_remote_code: bool = False
    ) -> Tokenize:
        """The stage for a model folder's tokenizer (in process: training, benchmark)."""
        tok = models.load_tokenizer(Path(model_dir), trust_remote_code)
        return cls(roles, models.TokenizerDef.of(tok))

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = batch.column(S.TEXT_INTERNAL).to_pylist()
        ok = pc.equal(batch.column(S.STATUS_INTERNAL), S.STATUS_OK).to_numpy(zero_copy_only=False)
        todo = [t if k else "" for t, k in zip(texts, ok)]
        encodings = self.backend.encode_batch(todo, add_special_tokens=False)
        ids, starts, ends, words = [], [], [], []
        for enc in encodings:
            token_ids = enc.ids  # each Encoding attribute read builds a new Python list
            n = len(token_ids)
            offsets = np.fromiter(chain.from_iterable(enc.offsets), np.int32, 2 * n)
            ids.append(np.fromiter(token_ids, np.int32, n))
            starts.append(offsets[0::2])
            ends.append(offsets[1::2])
            # None (a special or added token without a word) becomes NaN, then -1
            word = np.array(enc.word_ids, dtype=np.float64)
            words.append(np.nan_to_num(word, nan=-1.0).astype(np.int32))
        cols = {
            S.TOKEN_IDS: list_column(ids, pa.int32()),
            S.TOKEN_STARTS: list_column(starts, pa.int32()),
            S.TOKEN_ENDS: list_column(ends, pa.int32()),
            S.WORD_IDS: list_column(words, pa.int32()),
        }
        for role in self.roles:
            for name, column in cols.items():
                batch = batch.append_column(S.tokens_column(role, name), column)
        return batch
