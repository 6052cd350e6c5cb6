"""CPU stage: tokenize whole documents once, with character offsets and word ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import models
from pipeline import schemas as S


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
    """Adds ``_<role>_ids``, ``_<role>_tok_start``, ``_<role>_tok_end``, ``_<role>_word``:
    the whole document's tokens (no special tokens, no truncation), their character
    offsets into the original text, and their word index (-1 for none)."""

    def __init__(self, role: str, model_dir: str, trust_remote_code: bool = False) -> None:
        self.role = role
        self.tokenizer = models.load_tokenizer(Path(model_dir), trust_remote_code)

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = batch.column(S.TEXT_INTERNAL).to_pylist()
        ok = pc.equal(batch.column(S.STATUS_INTERNAL), S.STATUS_OK).to_numpy(zero_copy_only=False)
        todo = [t if k else "" for t, k in zip(texts, ok)]
        encodings = self.tokenizer(
            todo,
            add_special_tokens=False,
            return_offsets_mapping=True,
            return_attention_mask=False,
            truncation=False,
        ).encodings
        ids, starts, ends, words = [], [], [], []
        for enc in encodings:
            offsets = np.asarray(enc.offsets, dtype=np.int32).reshape(-1, 2)
            ids.append(np.asarray(enc.ids, dtype=np.int32))
            starts.append(offsets[:, 0])
            ends.append(offsets[:, 1])
            words.append(np.asarray([-1 if w is None else w for w in enc.word_ids], np.int32))
        cols = {
            S.TOKEN_IDS: ids,
            S.TOKEN_STARTS: starts,
            S.TOKEN_ENDS: ends,
            S.WORD_IDS: words,
        }
        for name, values in cols.items():
            batch = batch.append_column(
                S.tokens_column(self.role, name), list_column(values, pa.int32())
            )
        return batch
