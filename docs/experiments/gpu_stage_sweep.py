"""GPU sweep: the NER and embedding stages' own calls (no tokenizing, no output rows) on a
random-weight BERT-base, bf16 weights, autocast on or off, eager or torch.compile, and a
kernel profile of the embedding stage. Output of 2026-11-27 on an H100 beside this file.

    PYTHONPATH=. python docs/experiments/gpu_stage_sweep.py TOKENIZER_DIR DOCS.parquet WORKDIR

(DOCS: the generated corpus of docs/benchmarks.md; TOKENIZER_DIR: any BERT
tokenizer folder, e.g. the packaged all-MiniLM-L6-v2's.)
"""

import sys
import time
from pathlib import Path

import numpy as np
import torch

from pipeline import schemas as S
from pipeline.bench import harness as B
from pipeline.config import EmbedSettings, EncoderScheduling, NerSettings
from pipeline.stages.embed import EmbedStage
from pipeline.stages.ner import NerStage
from pipeline.stages.read import ReadSettings, document_columns
from pipeline.stages.tokenize import Tokenize
from pipeline.stages.write import entity_rows

tok_dir, docs_uri, work = sys.argv[1], sys.argv[2], Path(sys.argv[3])
work.mkdir(parents=True, exist_ok=True)
size = sys.argv[4] if len(sys.argv) > 4 else "bert-base"
limit = int(sys.argv[5]) if len(sys.argv) > 5 else 1000
embed_dir = B.build_random_bert(tok_dir, work / "bb", size)
ner_dir = B.build_ner_model(embed_dir, work / "ner")
table = B.load_documents(docs_uri, limit)
docs = document_columns(table, "x", ReadSettings("doc_id", "text", 10**9, 10**9))
batches = {}
for role, d in (("ner", ner_dir), ("embed", embed_dir)):
    t = Tokenize.of_model(role, d)
    batches[role] = [t(docs.slice(i, 512)) for i in range(0, docs.num_rows, 512)]

sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)


def timed(stage, role):
    stage(batches[role][0].slice(0, 64))  # warm-up (and first compile)
    sync()
    t0 = time.perf_counter()
    real0 = stage.encoder.real_tokens
    outs = [stage(b) for b in batches[role]]
    sync()
    dt = time.perf_counter() - t0
    return dt, outs, stage.encoder.real_tokens - real0


def key(outs):
    return {
        (r["doc_id"], r["start"], r["end"], r["label"])
        for o in outs
        for r in entity_rows(o).to_pylist()
    }


ref = None
ref_v = None
ref = None


def configs(cases):
    global ref, ref_v
    for compile_, autocast in cases:
        for role in ("ner", "embed"):
            if role == "ner":
                st = NerStage(
                    NerSettings(ner_dir, 512, 128, "bfloat16", aggregation="first"),
                    EncoderScheduling(65536),
                )
            else:
                st = EmbedStage(
                    EmbedSettings(embed_dir, 512, 128, "bfloat16", pooling="mean"),
                    EncoderScheduling(65536),
                )
            st.encoder.autocast = autocast
            if compile_:
                st.model = st.encoder.model = torch.compile(st.encoder.model, dynamic=True)
            t0 = time.perf_counter()
            dt, outs, real = timed(st, role)
            warm = time.perf_counter() - t0 - dt
            extra = ""
            if role == "ner":
                k = key(outs)
                if ref is None:
                    ref = k
                extra = (
                    f" entities {len(k)} agree_with_first {len(k & ref) / max(len(k | ref), 1):.4f}"
                )
            else:
                v = np.stack(
                    [np.asarray(x) for o in outs for x in o.column(S.DOC_EMBEDDING).to_pylist()]
                )
                if compile_ is False and autocast:
                    ref_v = v
                extra = f" min cos vs first {float((v * ref_v).sum(1).min()):.5f}"
            print(
                f"compile={compile_} autocast={autocast} {role}: {dt:.3f}s for the batches, "
                f"{real / dt / 1e6:.3f}M real tok/s; warm-up+compile {warm:.1f}s;{extra}",
                flush=True,
            )
            del st
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


configs([(False, True), (False, False)])
if torch.cuda.is_available():
    from torch.profiler import ProfilerActivity, profile

    st = EmbedStage(
        EmbedSettings(embed_dir, 512, 128, "bfloat16", pooling="mean"), EncoderScheduling(65536)
    )
    st(batches["embed"][0].slice(0, 64))
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        st(batches["embed"][0])
        torch.cuda.synchronize()
    print(
        prof.key_averages().table(
            sort_by="device_time_total", row_limit=22, max_name_column_width=60
        )
    )
configs([(True, False), (True, True)])
