"""GPU stage: token classification over windows, stitched into character spans."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from pipeline import schemas as S
from pipeline.spans import LabelScheme, Spans, decode_spans
from pipeline.stages.encoder import Encoder, WindowPlan
from pipeline.stages.tokenize import column_arrays
from pipeline.windows import window_owner, window_starts

ROLE = "ner"


class NerStage:
    """Adds ``_entities`` (list of start, end, label, score) to each document row.

    Each token's prediction comes from the window where it has the most context on
    both sides; words and entities are then formed over the whole document, so an
    entity at a window edge is neither cut nor duplicated.
    """

    def __init__(
        self,
        model_dir: str,
        max_length: int,
        stride: int,
        aggregation: str,
        dtype: str,
        batch_tokens: int,
        trust_remote_code: bool = False,
        allow_pickle: bool = False,
        threads: int | None = None,
    ) -> None:
        self.encoder = Encoder.load(
            model_dir, "ner", max_length, dtype, batch_tokens, trust_remote_code, allow_pickle,
            threads,
        )  # fmt: skip
        self.model = self.encoder.model
        self.id2label = {int(k): v for k, v in self.model.config.id2label.items()}
        self.scheme = LabelScheme.from_id2label(self.id2label)
        self.aggregation = aggregation
        self.stride = stride
        self.n_prefix = len(self.encoder.prefix)

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, attention_mask=mask).logits

    def _reduce(self, logits: torch.Tensor, mask: torch.Tensor) -> tuple[np.ndarray, ...]:
        # Only label ids and their probabilities leave the device; full label
        # probabilities only for the `average` strategy (n_labels floats a token).
        probs = logits.float().softmax(dim=-1)
        score, label = probs.max(dim=-1)
        out = [label.to(torch.int32).cpu().numpy(), score.cpu().numpy()]
        if self.aggregation == "average":
            out.append(probs.cpu().numpy())
        return tuple(out)

    def token_predictions(
        self, doc_ids: list[np.ndarray]
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        """Per document: each token's label id, score and (for ``average``) probabilities."""
        plan = WindowPlan.build([len(x) for x in doc_ids], self.encoder.window, self.stride)
        outs = self.encoder.run(doc_ids, plan, self._reduce, self._forward)
        result = []
        n_labels = len(self.id2label)
        for d, ids in enumerate(doc_ids):
            n = len(ids)
            label = np.zeros(n, dtype=np.int64)
            score = np.zeros(n, dtype=np.float32)
            probs = np.zeros((n, n_labels), np.float32) if self.aggregation == "average" else None
            windows = plan.of_doc(d)
            owner = window_owner(n, plan.start[windows], self.encoder.window)
            for k, w in enumerate(windows.tolist()):
                pos = np.flatnonzero(owner == k)
                col = self.n_prefix + pos - int(plan.start[w])
                label[pos] = outs[w][0][col]
                score[pos] = outs[w][1][col]
                if probs is not None:
                    probs[pos] = outs[w][2][col]
            result.append((label, score, probs))
        return result

    def __call__(self, batch: pa.Table) -> pa.Table:
        col = lambda name: column_arrays(batch, S.tokens_column(ROLE, name))  # noqa: E731
        ids, starts, ends, words = (
            col(S.TOKEN_IDS),
            col(S.TOKEN_STARTS),
            col(S.TOKEN_ENDS),
            col(S.WORD_IDS),
        )
        texts = batch.column(S.TEXT_INTERNAL).to_pylist()
        entities = []
        for d, (label, score, probs) in enumerate(self.token_predictions(ids)):
            spans = decode_spans(
                label,
                score,
                words[d],
                starts[d],
                ends[d],
                self.scheme,
                self.aggregation,
                texts[d],
                probs,
            )
            entities.append(spans_to_rows(spans))
        n_windows = [len(window_starts(len(x), self.encoder.window, self.stride)) for x in ids]
        batch = batch.append_column(S.ENTITIES, pa.array(entities, pa.list_(S.ENTITY_STRUCT)))
        return batch.append_column(S.N_WINDOWS_INTERNAL, pa.array(n_windows, pa.int32()))


def spans_to_rows(spans: Spans) -> list[dict]:
    return [
        {S.START: s, S.END: e, S.LABEL: lab, S.SCORE: sc}
        for s, e, lab, sc in zip(
            spans.start.tolist(), spans.end.tolist(), spans.label, spans.score.tolist()
        )
    ]
