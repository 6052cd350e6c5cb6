"""GPU stages of concept linking: the dictionary's name vectors (once per dictionary and
model, cached), and each entity's top-k concepts, after the entity stage.

A string's vector is computed as a document's is (``EmbedStage``): its tokens in windows
with the model's special tokens, pooled, token-weighted over windows, unit length; so a
name and the same words as a mention get the same vector.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline import schemas as S
from pipeline.config import EmbedSettings, EncoderScheduling

NAME_INDEX = "_i"  # row of a name in the dictionary
NAME_VECTOR = "_v"


@dataclass(frozen=True)
class LinkSettings:
    encoder: EmbedSettings  # the link model, as an embedding model
    top_k: int = 5
    min_score: float | None = None  # entities whose best score is lower get no concept
    sparse_weight: float = 0.5
    abbreviations: bool = True  # a defined short form is linked by its long form


class StringEncoder:
    """Unit vectors of short strings (names, mentions) with an embedding model."""

    def __init__(self, settings: EmbedSettings, sched: EncoderScheduling) -> None:
        from pipeline.models import loading as models
        from pipeline.stages.embed import EmbedStage  # torch: in the actor only

        self.embed = EmbedStage(settings, sched)
        self.dim = self.embed.dim
        tokenizer = models.load_tokenizer(Path(settings.model_dir), settings.trust_remote_code)
        self.backend = models.TokenizerDef.of(tokenizer).build()

    def __call__(self, strings: list[str]) -> np.ndarray:
        """``[len(strings), dim]`` float32, unit rows (zero for a string with no token)."""
        from pipeline.core.pooling import document_vector, l2_normalize

        encodings = self.backend.encode_batch(strings, add_special_tokens=False)
        ids = [np.asarray(e.ids, np.int64) for e in encodings]
        plan, vectors = self.embed.window_vectors(ids)
        out = np.zeros((len(strings), self.dim), np.float32)
        for d, ws in enumerate(plan.windows_by_doc(len(ids))):
            if len(ws):
                out[d] = document_vector(vectors[ws], plan.length[ws])
        return l2_normalize(out).astype(np.float32)


class NameVectors:
    """Ray Data stage over dictionary rows (``_i``, ``name``): adds ``_v``, each name's
    vector, float16 (the index keeps float16: half the memory, the same ranking to about
    1e-3 of a score)."""

    def __init__(self, settings: EmbedSettings, sched: EncoderScheduling) -> None:
        self.encoder = StringEncoder(settings, sched)

    def __call__(self, batch: pa.Table) -> pa.Table:
        vectors = self.encoder(batch.column("name").to_pylist()).astype(np.float16)
        flat = pa.array(vectors.reshape(-1), pa.float16())
        return pa.table(
            {
                NAME_INDEX: batch.column(NAME_INDEX),
                NAME_VECTOR: pa.FixedSizeListArray.from_arrays(flat, self.encoder.dim),
            }
        )


class LinkStage:
    """Adds ``concept_id``, ``concept_name`` and ``concept_score`` to every entity of
    ``_entities`` (null below the minimum score) and ``_links``: each entity's top-k
    candidates (start, end, rank, concept_id, name, score)."""

    def __init__(self, settings: LinkSettings, sched: EncoderScheduling, index: list[Any]) -> None:
        import ray
        import torch

        self.settings = settings
        self.encoder = StringEncoder(settings.encoder, sched)
        # The driver put the index in the object store once; actors on one node share
        # its vectors (zero-copy), an actor on another node fetches them.
        self.index = ray.get(index[0]) if isinstance(index[0], ray.ObjectRef) else index[0]
        device = self.encoder.embed.encoder.device
        vectors = torch.from_numpy(self.index.vectors)
        self.vectors = vectors.to(device) if device.type == "cuda" else vectors

    def _is_name(self, mention: str) -> bool:
        from pipeline.linking.dictionary import normalize_name

        return len(self.index.exact_matches(normalize_name(mention))) > 0

    def __call__(self, batch: pa.Table) -> pa.Table:
        from pipeline.linking.abbreviations import abbreviations, expand
        from pipeline.linking.retrieval import search

        texts = batch.column(S.TEXT_INTERNAL).to_pylist()
        entities = [list(x or []) for x in batch.column(S.ENTITIES).to_pylist()]
        mentions, labels, where = [], [], []
        for d, ents in enumerate(entities):
            defined = abbreviations(texts[d]) if ents and self.settings.abbreviations else {}
            for j, e in enumerate(ents):
                mentions.append(expand(texts[d][e[S.START] : e[S.END]], defined, self._is_name))
                labels.append(e[S.LABEL])
                where.append((d, j))
        queries = self.encoder(mentions) if mentions else np.zeros((0, 1), np.float32)
        found = search(
            self.index, self.vectors, queries, mentions, labels, self.settings.top_k,
            self.settings.sparse_weight,
        )  # fmt: skip
        links: list[list[dict[str, Any]]] = [[] for _ in entities]
        for (d, j), cands in zip(where, found):
            e = entities[d][j]
            best = cands[0] if cands else None
            floor = self.settings.min_score
            if best is not None and floor is not None and best.score < floor:
                best = None
            e[S.CONCEPT_ID] = best.concept_id if best else None
            e[S.CONCEPT_NAME] = best.name if best else None
            e[S.CONCEPT_SCORE] = best.score if best else None
            links[d] += [
                {S.START: e[S.START], S.END: e[S.END], S.RANK: r, S.CONCEPT_ID: c.concept_id,
                 S.NAME: c.name, S.SCORE: c.score}
                for r, c in enumerate(cands, start=1)
            ]  # fmt: skip
        for ents in entities:  # entities without a mention string still get the fields
            for e in ents:
                for c in (S.CONCEPT_ID, S.CONCEPT_NAME, S.CONCEPT_SCORE):
                    e.setdefault(c, None)
        struct = S.linked_entity_struct(batch.schema.field(S.ENTITIES).type.value_type)
        batch = batch.drop_columns([S.ENTITIES])
        batch = batch.append_column(S.ENTITIES, pa.array(entities, pa.list_(struct)))
        return batch.append_column(S.LINKS, pa.array(links, pa.list_(S.LINK_STRUCT)))
