"""Documents for tests: random sentences of the tiny models' words, document batches,
and the NER and embedding stages run in process over them."""

from __future__ import annotations

import random

import pyarrow as pa

from pipeline.config import EmbedSettings, EncoderScheduling, NerSettings
from pipeline.stages.embed import EmbedStage
from pipeline.stages.ner import NerStage
from pipeline.stages.read import ReadSettings, document_columns
from pipeline.stages.tokenize import Tokenize
from pipeline.stages.write import entity_rows
from support import tiny_models as tm


def docs(texts: list) -> pa.Table:
    table = pa.table({"doc_id": [f"d{i}" for i in range(len(texts))], "text": texts})
    return document_columns(table, "shard", ReadSettings("doc_id", "text", 10**6, 1000))


def run_ner(
    model_dir, texts, max_length=128, stride=16, aggregation="first", batch_tokens=512,
    decoding="viterbi",
):  # fmt: skip
    batch = Tokenize.of_model("ner", model_dir)(docs(texts))
    stage = NerStage(
        NerSettings(
            model_dir, max_length, stride, "float32", aggregation=aggregation, decoding=decoding
        ),
        EncoderScheduling(batch_tokens),
    )
    return entity_rows(stage(batch)).to_pylist()


def embed(model_dir, texts, max_length=32, stride=8, batch_tokens=512, pooling="mean"):
    batch = Tokenize.of_model("embed", model_dir)(docs(texts))
    stage = EmbedStage(
        EmbedSettings(model_dir, max_length, stride, "float32", pooling=pooling),
        EncoderScheduling(batch_tokens),
    )
    return stage(batch)


def sentence(rng: random.Random, n_words: int) -> str:
    words = tm.PLAIN + tm.DISEASE_B + tm.DISEASE_I + tm.CHEM_B + tm.CHEM_I
    out = []
    for _ in range(n_words):
        w = rng.choice(words)
        r = rng.random()
        if r < 0.1:
            w += rng.choice(["s", "ed", "itis", "ol"])  # split into subword tokens
        elif r < 0.15:
            w = w.capitalize()
        out.append(w)
        if rng.random() < 0.1:
            out.append(rng.choice([",", ".", "(", ")", "5", "%"]))
    return " ".join(out)


def wtf8(text: str) -> bytes:
    """``text`` with lone surrogates encoded as three bytes each, as non-validating
    writers (WTF-8/CESU-8) do; pyarrow refuses such a Python str outright."""
    return text.encode("utf-8", "surrogatepass")


def unchecked_strings(values: list[bytes | None]) -> pa.Array:
    """A ``string`` array holding arbitrary bytes, without UTF-8 validation."""
    raw = pa.array(values, pa.binary())
    return pa.Array.from_buffers(pa.string(), len(raw), raw.buffers(), raw.null_count)
