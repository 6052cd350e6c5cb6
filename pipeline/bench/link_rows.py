"""The benchmark's linking rows: what linking adds to the whole job's wall time (NER +
embeddings, then the same with linking against a dictionary, its name vectors embedded
on the first linking run and read from the cache on the second), and the memory of a
link index of a million names.

The million-name index is made of the dictionary's names repeated with a numeric
suffix, with random unit vectors: embedding a million names on a CPU takes about an
hour, and an index's memory does not depend on its vectors' values.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline import schemas as S
from pipeline.bench.harness import BenchSettings, Clock, Corpus, _vm_hwm_bytes, row
from pipeline.bench.ray_rows import annotate_args, run_annotate, write_input

ROOT = Path(__file__).resolve().parents[2]
MIB = 2**20
MENTIONS = 2048  # searched in the memory probe, as a link actor's batches do


def link_rows(
    corpus: Corpus, ner_dir: str, embed_dir: str, dictionary: str, s: BenchSettings,
    dtype: str, workdir: Path,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:  # fmt: skip
    """Three runs of the job on the corpus: without linking, linking with a cold index
    cache, linking with a warm one. Returns their rows and the overhead figures."""
    workdir.mkdir(parents=True, exist_ok=True)
    input_uri = write_input(corpus, workdir)
    cache = workdir / "cache"
    runs: dict[str, dict[str, Any]] = {}
    for name in ("without linking", "linking, index embedded", "linking, index cached"):
        out = str(workdir / f"out-{len(runs)}")
        args = annotate_args(input_uri, out, ner_dir, embed_dir, s, dtype)
        if name != "without linking":
            args += ["--link-dictionary", dictionary, "--link-model", embed_dir]
        (workdir / str(len(runs))).mkdir(parents=True, exist_ok=True)
        before = os.environ.get("BIOMED_ANNOTATE_CACHE")
        os.environ["BIOMED_ANNOTATE_CACHE"] = str(cache)  # the run's own index cache
        try:
            runs[name] = run_annotate(args, workdir / str(len(runs)))
        finally:
            if before is None:
                os.environ.pop("BIOMED_ANNOTATE_CACHE")
            else:
                os.environ["BIOMED_ANNOTATE_CACHE"] = before
    rows = []
    for name, res in runs.items():
        mem = res["memory"]
        rows.append(
            row(
                f"jobs.annotate, NER + embedding, {name}",
                dtype,
                corpus,
                Clock(res["wall_s"], mem["cpu_s"]),
                None,
                peak_mib=mem["tree_peak_mib"],
                job_wall_s=res["run"]["this_run"]["wall_s"],
                linking=res["run"].get("linking"),
                attempts=res["attempts"],
            )  # fmt: skip
        )
    base = rows[0]["wall_s"]
    overhead = {
        "cold_ratio": rows[1]["wall_s"] / base,
        "warm_ratio": rows[2]["wall_s"] / base,
        "linked_entities": runs["linking, index cached"]["run"]["rows"].get(S.ENTITIES_DIR),
        "links_rows": runs["linking, index cached"]["run"]["rows"].get(S.LINKS_DIR),
    }
    return rows, overhead


def index_memory(dictionary: str, model_dir: str, n_names: int, workdir: Path) -> dict[str, Any]:
    """Peak memory of one process that does a link actor's work on an ``n_names`` index:
    loads the model, holds the index, encodes and searches mentions (in a fresh process,
    so that nothing else this benchmark loaded counts)."""
    out = workdir / "index-memory.json"
    cmd = [sys.executable, "-m", "pipeline.bench.link_rows", dictionary, model_dir,
           str(n_names), str(out)]  # fmt: skip
    subprocess.run(cmd, cwd=ROOT, check=True, timeout=3600)
    return json.loads(out.read_text())


def _probe(dictionary_uri: str, model_dir: str, n_names: int, out: Path) -> None:
    import torch

    from pipeline.config import EmbedSettings, EncoderScheduling
    from pipeline.linking.dictionary import from_table, read_dictionary
    from pipeline.linking.retrieval import LinkIndex, search
    from pipeline.stages.link import StringEncoder

    base = read_dictionary(dictionary_uri)
    reps = -(-n_names // len(base))
    ids = [c for r in range(reps) for c in base.concept_ids][:n_names]
    names = [f"{n} {r}" if r else n for r in range(reps) for n in base.names][:n_names]
    d = from_table(pa.table({"concept_id": ids, "name": names}), "benchmark")
    mib = lambda: (_vm_hwm_bytes() or 0) / MIB  # noqa: E731
    encoder = StringEncoder(
        EmbedSettings(model_dir, 512, 128, pooling="mean"), EncoderScheduling(16384)
    )
    after_model = mib()
    rng = np.random.default_rng(0)
    vectors = np.empty((len(d), encoder.dim), np.float16)
    for a in range(0, len(d), 65536):  # no float32 copy of the whole matrix
        v = rng.standard_normal((min(65536, len(d) - a), encoder.dim), np.float32)
        vectors[a : a + len(v)] = v / np.linalg.norm(v, axis=1, keepdims=True)
    t0 = time.perf_counter()
    index = LinkIndex.build(d, vectors)
    build_s = time.perf_counter() - t0
    mentions = base.names[:MENTIONS]
    t0 = time.perf_counter()
    queries = encoder(mentions)
    found = search(
        index, torch.from_numpy(index.vectors), queries, mentions, [None] * len(mentions), 5
    )
    search_s = time.perf_counter() - t0
    result = {
        "names": len(d),
        "dim": encoder.dim,
        "vector_dtype": "float16",
        "vector_mib": vectors.nbytes / MIB,
        "ngram_mib": (index.ngrams.data.nbytes + index.ngrams.indices.nbytes) / MIB,
        "peak_after_model_mib": after_model,
        "peak_mib": mib(),
        "index_build_s": build_s,
        "mentions": len(mentions),
        "encode_search_s": search_s,
        "exact_first": sum(bool(f) and f[0].exact for f in found),
    }
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    _probe(sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
