"""Where the link stage's time goes, in process on one thread: encode the NCBI training
mentions with all-MiniLM-L6-v2 and search the NCBI dictionary's cached index (run the
dev commands of docs/linking.md first, so that the vectors are cached), under cProfile.

    .venv/bin/python docs/experiments/link_search_profile.py ../shared/data MODEL DICTIONARY
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import time
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import torch

from pipeline.config import EmbedSettings, EncoderScheduling, ModelSpec
from pipeline.execution.plan import resolve_model
from pipeline.linking import index as cache
from pipeline.linking.dictionary import read_dictionary
from pipeline.linking.retrieval import LinkIndex, search
from pipeline.models import loading as models
from pipeline.stages.link import StringEncoder


def main(data: str, model: str, dictionary: str) -> None:
    torch.set_num_threads(1)  # as a link actor on a CPU-only cluster of 2 cores
    info = resolve_model(ModelSpec(model, "link"))
    tok = models.TokenizerDef.of(models.load_tokenizer(Path(info.local_dir)))
    info = replace(info, tokenizer_sha256=tok.sha256)
    d = read_dictionary(dictionary)
    vectors = cache.load_vectors(cache.index_key(d, info), len(d))
    if vectors is None:
        raise SystemExit("no cached vectors for this dictionary and model: run the job first")
    index = LinkIndex.build(d, vectors)
    ents = pq.read_table(f"{data}/ncbi_disease/train_entities.parquet").to_pandas()
    mentions, labels = ents.text.tolist(), ents.label.tolist()
    encoder = StringEncoder(
        EmbedSettings(model, 512, 128, pooling="mean"), EncoderScheduling(16384, 1)
    )
    t0 = time.perf_counter()
    queries = encoder(mentions)
    print(f"encode {len(mentions)} mentions: {time.perf_counter() - t0:.1f} s")
    profile = cProfile.Profile()
    t0 = time.perf_counter()
    profile.enable()
    search(index, torch.from_numpy(index.vectors), queries, mentions, labels, 5, 0.5)
    profile.disable()
    print(f"search against {len(d)} names: {time.perf_counter() - t0:.1f} s")
    pstats.Stats(profile).sort_stats("tottime").print_stats(8)


if __name__ == "__main__":
    main(*sys.argv[1:])
