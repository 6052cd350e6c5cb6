"""The inference runtime's device path, checked on CPU, and on a GPU where there is one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.documents import docs, run_ner, sentence

from pipeline.config import EmbedSettings, EncoderScheduling, NerSettings
from pipeline.core.windows import WindowPlan
from pipeline.stages.embed import EmbedStage
from pipeline.stages.encoder import resolve_dtype
from pipeline.stages.ner import NerStage
from pipeline.stages.tokenize import Tokenize


def test_auto_dtype_is_fp32_on_cpu_and_bf16_on_gpu():
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("float16", torch.device("cpu")) == torch.float16


def scan(plan: WindowPlan, d: int) -> np.ndarray:
    """Document ``d``'s windows by a scan of every window: the reference for
    ``windows_by_doc``."""
    return np.flatnonzero(plan.doc == d)


def test_window_plan_lists_every_window_of_every_document():
    plan = WindowPlan.build([0, 5, 23], window=10, stride=4)
    # 23 tokens, step 10 - 4 = 6: windows at 0, 6, 12, and one aligned to end at 13
    assert plan.doc.tolist() == [1, 2, 2, 2, 2]
    assert plan.start.tolist() == [0, 0, 6, 12, 13]
    assert plan.length.tolist() == [5, 10, 10, 10, 10]
    assert scan(plan, 0).tolist() == [] and scan(plan, 2).tolist() == [1, 2, 3, 4]
    assert [w.tolist() for w in plan.windows_by_doc(4)] == [[], [0], [1, 2, 3, 4], []]


def test_windows_by_doc_equals_a_scan_per_document():
    rng = np.random.default_rng(4)
    plan = WindowPlan.build(rng.integers(0, 300, size=200).tolist(), window=32, stride=8)
    by_doc = plan.windows_by_doc(200)
    assert len(by_doc) == 200
    assert all(by_doc[d].tolist() == scan(plan, d).tolist() for d in range(200))


def test_only_label_ids_and_scores_leave_the_device(model_dirs):  # noqa: F811
    stage = NerStage(
        NerSettings(model_dirs["random"], 32, 8, "float32", decoding="greedy"),
        EncoderScheduling(512),
    )
    logits = torch.randn(3, 7, 5)
    out = stage._reduce(logits, torch.ones(3, 7))
    assert [tuple(o.shape) for o in out] == [(3, 7), (3, 7)]
    assert out[0].dtype == torch.int32 and out[1].dtype == torch.float32
    np.testing.assert_array_equal(out[0].numpy(), logits.argmax(-1).numpy())
    avg = NerStage(
        NerSettings(model_dirs["random"], 32, 8, "float32", aggregation="average"),
        EncoderScheduling(512),
    )
    assert avg._reduce(logits, torch.ones(3, 7))[2].shape == (3, 7, 5)  # needed for average
    constrained = NerStage(
        NerSettings(model_dirs["random"], 32, 8, "float32", decoding="viterbi"),
        EncoderScheduling(512),
    )
    probs = constrained._reduce(logits, torch.ones(3, 7))[2]  # Viterbi scores every label
    np.testing.assert_allclose(probs.numpy(), logits.softmax(-1).numpy(), rtol=1e-5)


def test_each_document_is_finished_once_with_its_windows_outputs(model_dirs):  # noqa: F811
    # A small budget makes many passes, so documents finish at different passes.
    stage = NerStage(
        NerSettings(model_dirs["random"], 16, 4, "float32", aggregation="first"),
        EncoderScheduling(48),
    )
    rng = np.random.default_rng(0)
    doc_ids = [rng.integers(5, 50, size=n) for n in (0, 3, 40, 14, 0, 90, 1)]
    plan = WindowPlan.build([len(x) for x in doc_ids], stage.encoder.window, stage.stride)
    seen: dict[int, list] = {}

    def on_docs(docs: list[int], out: list) -> None:
        for d in docs:
            assert d not in seen, "finished twice"
            seen[d] = [out[w] for w in scan(plan, d).tolist()]
            assert all(o is not None for o in seen[d]), "finished before its windows"

    outs = stage.encoder.run(doc_ids, plan, stage._reduce, stage._forward, on_docs=on_docs)
    assert sorted(seen) == list(range(len(doc_ids)))
    assert seen[0] == [] and seen[4] == []
    for d, got in seen.items():
        want = [outs[w] for w in scan(plan, d).tolist()]
        assert len(got) == len(want) == len(scan(plan, d))
        for g, w in zip(got, want):
            assert all(np.array_equal(a, b) for a, b in zip(g, w))


def test_embedding_reduce_returns_one_pooled_vector_per_window(model_dirs):  # noqa: F811
    stage = EmbedStage(
        EmbedSettings(model_dirs["encoder"], 32, 8, "float32", pooling="mean"),
        EncoderScheduling(512),
    )
    hidden = torch.randn(4, 9, 32)
    mask = torch.ones(4, 9, dtype=torch.long)
    mask[1, 5:] = 0
    (vecs,) = stage._reduce(hidden, mask)
    assert vecs.shape == (4, 32)
    np.testing.assert_allclose(vecs[1].numpy(), hidden[1, :5].mean(0).numpy(), rtol=1e-5)


def test_bf16_keeps_the_oracle_entities(model_dirs):  # noqa: F811
    import random

    rng = random.Random(3)
    texts = [sentence(rng, 30) for _ in range(8)]
    fp32 = run_ner(model_dirs["oracle"], texts, max_length=16, stride=4)
    batch = Tokenize.of_model("ner", model_dirs["oracle"])(docs(texts))
    stage = NerStage(
        NerSettings(model_dirs["oracle"], 16, 4, "bfloat16", aggregation="first"),
        EncoderScheduling(512),
    )
    assert stage.encoder.dtype == torch.bfloat16
    from pipeline.stages.write import entity_rows

    bf16 = entity_rows(stage(batch)).to_pylist()
    key = lambda r: (r["doc_id"], r["start"], r["end"], r["label"])  # noqa: E731
    assert sorted(map(key, bf16)) == sorted(map(key, fp32))


@pytest.mark.gpu
def test_gpu_matches_cpu(model_dirs):  # noqa: F811
    import random

    rng = random.Random(5)
    texts = [sentence(rng, rng.randint(5, 80)) for _ in range(32)]
    batch = Tokenize.of_model("embed", model_dirs["encoder"])(docs(texts))
    gpu = EmbedStage(
        EmbedSettings(model_dirs["encoder"], 32, 8, "float32", pooling="mean"),
        EncoderScheduling(512),
    )
    assert gpu.encoder.device.type == "cuda" and gpu.encoder.multiple_of == 8
    assert next(gpu.model.parameters()).is_cuda
    gpu_vecs = np.array(gpu(batch).column("_doc_embedding").to_pylist())
    gpu.encoder.device = torch.device("cpu")
    gpu.model.to("cpu")
    gpu.encoder.model = gpu.model
    cpu_vecs = np.array(gpu(batch).column("_doc_embedding").to_pylist())
    assert ((gpu_vecs * cpu_vecs).sum(1)).min() > 0.9999
    bf16 = EmbedStage(
        EmbedSettings(model_dirs["encoder"], 32, 8, "auto", pooling="mean"), EncoderScheduling(512)
    )
    assert bf16.encoder.dtype == torch.bfloat16
    bf_vecs = np.array(bf16(batch).column("_doc_embedding").to_pylist())
    assert ((bf_vecs * cpu_vecs).sum(1)).min() > 0.99


@pytest.mark.gpu
def test_gpu_copies_outputs_back_asynchronously_into_pinned_memory(model_dirs):  # noqa: F811
    stage = NerStage(
        NerSettings(model_dirs["random"], 32, 8, "float32", aggregation="first"),
        EncoderScheduling(512),
    )
    logits = torch.randn(3, 7, 5, device="cuda")
    host, done = stage.encoder._to_host(stage._reduce(logits, torch.ones(3, 7, device="cuda")))
    done.synchronize()
    assert all(t.device.type == "cpu" and t.is_pinned() for t in host)
    np.testing.assert_array_equal(host[0].numpy(), logits.argmax(-1).cpu().numpy())


@pytest.mark.gpu
def test_gpu_ner_gives_the_cpu_entities(model_dirs):  # noqa: F811
    # Many passes (small budget), so results of one pass are read while the next runs.
    import random

    rng = random.Random(11)
    texts = [sentence(rng, rng.randint(5, 120)) for _ in range(40)]
    batch = Tokenize.of_model("ner", model_dirs["oracle"])(docs(texts))
    gpu = NerStage(
        NerSettings(model_dirs["oracle"], 16, 4, "float32", aggregation="first"),
        EncoderScheduling(64),
    )
    assert gpu.encoder.device.type == "cuda"
    from pipeline.stages.write import entity_rows

    on_gpu = entity_rows(gpu(batch)).to_pylist()
    gpu.encoder.device = torch.device("cpu")
    gpu.encoder.model = gpu.model.to("cpu")
    on_cpu = entity_rows(gpu(batch)).to_pylist()
    key = lambda r: (r["doc_id"], r["start"], r["end"], r["label"])  # noqa: E731
    assert len(on_cpu) > 40 and list(map(key, on_gpu)) == list(map(key, on_cpu))
    np.testing.assert_allclose([r["score"] for r in on_gpu], [r["score"] for r in on_cpu], 1e-4)


def test_compiled_encoder_gives_the_eager_entities(model_dirs):  # noqa: F811
    # torch.compile with dynamic shapes: passes of several widths and window counts (a
    # small budget, documents of many lengths) all reuse the compiled model.
    import random

    rng = random.Random(2)
    texts = [sentence(rng, rng.randint(1, 60)) for _ in range(30)]
    batch = Tokenize.of_model("ner", model_dirs["random"])(docs(texts))
    compiled = NerStage(
        NerSettings(model_dirs["random"], 16, 4, "float32", aggregation="first"),
        EncoderScheduling(96, compile_model=True),
    )
    assert compiled.encoder.model is not compiled.encoder.model._orig_mod  # really compiled
    from pipeline.stages.write import entity_rows

    got = entity_rows(compiled(batch)).to_pylist()
    want = run_ner(model_dirs["random"], texts, max_length=16, stride=4, batch_tokens=96)
    key = lambda r: (r["doc_id"], r["start"], r["end"], r["label"])  # noqa: E731
    assert len(want) > 30 and list(map(key, got)) == list(map(key, want))
    np.testing.assert_allclose([r["score"] for r in got], [r["score"] for r in want], 1e-4)


def test_compile_flag_reaches_the_scheduling():
    from jobs.annotate import parse_args, to_config

    base = ["--input", "in", "--output", "out", "--ner-model", "m"]
    assert to_config(parse_args([*base, "--compile"]))[1].compile_model is True
    assert to_config(parse_args(base))[1].compile_model is False
