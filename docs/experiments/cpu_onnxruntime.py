"""Would ONNX Runtime make the CPU forward passes faster than PyTorch eager?

The NER model of the benchmark (all-MiniLM-L6-v2 with a random token-classification
head, seed 0) is exported to ONNX (TorchScript exporter: the dynamo exporter's graph
ran slower still and, with a padding mask, disagreed with eager on half the tokens),
fused by ONNX Runtime's transformer optimizer and its level-ALL graph optimisations, and
run on exactly the passes our stages make (same windows, same packing by token budget)
against PyTorch eager. It reports the time of each and how many token positions get
the same argmax label.

    PYTHONPATH=. python docs/experiments/cpu_onnxruntime.py DOCS.parquet [LIMIT]

Needs ``onnxruntime``, ``onnx`` and ``onnxscript`` (not dependencies of the project).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pipeline import schemas as S
from pipeline.bench.harness import BenchSettings, build_ner_model, job_batch_tokens, load_documents
from pipeline.config import EncoderScheduling, EncoderSettings
from pipeline.core.windows import WindowPlan
from pipeline.sample import defaults
from pipeline.stages.encoder import Encoder
from pipeline.stages.read import ReadSettings, document_columns
from pipeline.stages.tokenize import Tokenize, column_arrays


def main() -> None:
    import onnxruntime as ort

    uri = sys.argv[1]
    limit = int(sys.argv[2]) if len(sys.argv) > 2 else None
    threads = torch.get_num_threads()
    tmp = Path(tempfile.mkdtemp())
    ner_dir = build_ner_model(defaults.default_embed_model(), tmp / "ner")
    s = BenchSettings()
    table = load_documents(uri, limit)
    docs = document_columns(table, "x", ReadSettings("doc_id", "text", 10**9, 10**9))
    tokens = Tokenize.of_model("ner", ner_dir)(docs)
    ids = column_arrays(tokens, S.tokens_column("ner", S.TOKEN_IDS))
    enc = Encoder.load(
        EncoderSettings(ner_dir, s.max_length, s.stride, "float32"),
        "ner",
        EncoderScheduling(job_batch_tokens(s, ner_dir, "float32")),
    )
    plan = WindowPlan.build([len(x) for x in ids], enc.window, s.stride)

    onnx_path = tmp / "ner.onnx"
    enc.model.set_attn_implementation("eager")  # the pattern ORT's Attention fusion knows
    x = torch.ones((2, 16), dtype=torch.int64)
    torch.onnx.export(
        enc.model,
        (),
        str(onnx_path),
        kwargs={"input_ids": x, "attention_mask": x},
        input_names=["input_ids", "attention_mask"],
        output_names=["logits"],
        dynamic_axes={n: {0: "batch", 1: "seq"} for n in ("input_ids", "attention_mask", "logits")},
        dynamo=False,
        opset_version=17,
    )
    from onnxruntime.transformers.optimizer import optimize_model

    cfg = enc.model.config
    fused = optimize_model(str(onnx_path), "bert", cfg.num_attention_heads, cfg.hidden_size)
    print("fused operators:", fused.get_fused_operator_statistics())
    fused.save_model_to_file(str(tmp / "fused.onnx"))
    onnx_path = tmp / "fused.onnx"
    enc.model.set_attn_implementation("sdpa")  # torch eager rows: as the job runs
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])

    def torch_fwd(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return enc.model(input_ids=x, attention_mask=mask).logits

    def ort_fwd(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        (logits,) = sess.run(["logits"], {"input_ids": x.numpy(), "attention_mask": mask.numpy()})
        return torch.from_numpy(logits)

    def argmax(out: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return out.argmax(-1), out.max(-1).values

    print(
        f"torch {torch.__version__}, onnxruntime {ort.__version__}, {threads} threads, "
        f"{len(ids)} docs, {int(plan.length.sum())} content tokens in {len(plan.doc)} windows"
    )
    results = {}
    for rnd in range(2):
        for name, fwd in (("torch eager", torch_fwd), ("onnxruntime", ort_fwd)):
            t0 = time.perf_counter()
            out = enc.run(ids, plan, argmax, fwd)
            dt = time.perf_counter() - t0
            results[name] = out
            print(f"{name:12s} round {rnd + 1}: {dt:7.2f} s")
    same = total = 0
    max_diff = 0.0
    for (a, sa), (b, sb) in zip(results["torch eager"], results["onnxruntime"]):
        same += int((a == b).sum())
        total += a.size
        max_diff = max(max_diff, float(np.abs(sa - sb).max()))
    print(
        f"argmax agreeing on {same}/{total} token positions ({same / total:.6f}); "
        f"max |logit diff| of the top label {max_diff:.2e}"
    )


if __name__ == "__main__":
    main()
