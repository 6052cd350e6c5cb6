"""The benchmark on tiny random models: its output structure, its token count, its
agreement checks, the Markdown it regenerates, and (slow) its Ray and scale rows."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import tiny_models as tm
from support.documents import sentence

from jobs import bench
from pipeline.bench import harness as B
from pipeline.bench.contenders import _padded_in_order
from pipeline.bench.report import update_markdown

MAX_LENGTH, STRIDE = 32, 8


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    encoder = tm.write_random_encoder(root / "encoder", seed=5)
    rng = random.Random(3)
    texts = [sentence(rng, rng.randint(3, 20)) for _ in range(10)]
    texts[2] = " ".join(sentence(rng, 10) + " ." for _ in range(8))  # several windows
    texts[4] = "   "  # blank: left out
    dup = [None] * len(texts)
    dup[6] = "d0"  # marked as a duplicate: left out
    path = root / "docs.parquet"
    ids = [f"d{i}" for i in range(len(texts))]
    pq.write_table(pa.table({"doc_id": ids, "text": texts, "duplicate_of": dup}), path)
    kept = [t for i, t in enumerate(texts) if i not in (4, 6)]
    return {"root": root, "encoder": str(encoder), "docs": str(path), "kept": kept}


def test_window_tokens_match_an_independent_count(setup):
    s = B.BenchSettings(max_length=MAX_LENGTH, stride=STRIDE)
    corpus = B.prepare_corpus(B.load_documents(setup["docs"], None), setup["encoder"], s)
    assert corpus.texts == setup["kept"]
    tok = __import__("transformers").AutoTokenizer.from_pretrained(setup["encoder"])
    window, want = MAX_LENGTH - 2, 0
    for text in setup["kept"]:
        n = len(tok(text, add_special_tokens=False)["input_ids"])
        k = 1 if n <= window else math.ceil((n - window) / (window - STRIDE)) + 1
        want += (n if k == 1 else k * window) + 2 * k  # [CLS] and [SEP] per window
    assert corpus.window_tokens == want
    assert len(corpus.single_window_docs()) == len(setup["kept"]) - 1


def test_padding_in_order_and_entity_agreement():
    assert _padded_in_order([5, 3, 3, 1], 2) == 5 * 2 + 3 * 2
    a, b = {(0, 0, 3, "X"), (1, 2, 4, "Y")}, {(0, 0, 3, "X")}
    got = B.entity_agreement(a, b)
    assert got["identical"] is False and got["common"] == 1 and got["agreement"] == 0.5


def test_benchmark_rows_checks_and_markdown(setup, tmp_path, capsys):
    out, md = tmp_path / "bench.json", tmp_path / "bench.md"
    md.write_text("# Results\n\nkept text\n")
    args = ["--docs", setup["docs"], "--model", setup["encoder"], "--skip-ray"]
    args += ["--max-length", str(MAX_LENGTH), "--stride", str(STRIDE), "--limit", "7"]
    args += ["--hf-batch-sizes", "1,4", "--json", str(out), "--markdown", str(md)]
    # the 7 documents as one batch, as the bare forward row packs them (the job's default
    # would be batches of one: test_graph_blocks checks that size)
    args += ["--workdir", str(tmp_path / "work"), "--docs-per-batch", "64"]
    assert bench.main(args) == 0
    result = json.loads(out.read_text())
    names = [(r["row"], r["dtype"]) for r in result["rows"]]
    assert names == [
        ("transformers pipeline (NER)", "float32"),
        ("sentence-transformers encode", "float32"),
        ("ours: NER stage", "float32"),
        ("ours: NER stage", "bfloat16"),
        ("ours: embedding stage", "float32"),
        ("ours: embedding stage", "bfloat16"),
        ("ours: context stage (sentences, sections, ConText)", "-"),
        ("bare forward passes (NER model, no decoding)", "float32"),
        ("ours in process: NER + embedding (sum)", "float32"),
    ]
    tokens = {r["tokens"] for r in result["rows"]}
    assert tokens == {result["corpus"]["window_tokens"]} and result["corpus"]["docs"] == 7
    assert result["checks"]["tokens_counted_alike"] is True
    for r in result["rows"]:
        assert r["tokens_per_s"] > 0 and r["wall_s"] > 0
        assert r["padding"] is None or 0 <= r["padding"] < 1
    assert result["rows"][0]["batch_size"] in (1, 4)
    # Documents that fit one window: the pipeline's entities and ours must be identical,
    # and our vectors must equal sentence-transformers' (same weights, same tokens).
    ner = result["checks"]["ner_vs_pipeline"]["single_window_docs"]
    assert ner["identical"] and ner["reference"] > 5
    cos = result["checks"]["embed_vs_sentence_transformers"]["single_window_docs"]
    assert cos["min"] >= 0.999 and cos["windows"] == 6
    assert 0 <= result["checks"]["ner_bfloat16_vs_float32"]["agreement"] <= 1
    assert {t["target"].split()[0] for t in result["targets"]} >= {"NER", "Embedding", "Padding"}
    # The ceiling row runs the same windows, packed the way our stages pack them.
    bare = next(r for r in result["rows"] if r["row"].startswith("bare forward"))
    ner32 = next(r for r in result["rows"] if r["row"] == "ours: NER stage")
    assert bare["tokens"] == ner32["tokens"] and 0 <= bare["padding"] <= ner32["padding"] + 0.05
    printed = capsys.readouterr().out
    assert "transformers pipeline (NER)" in printed and "MET" in printed
    text = md.read_text()
    assert text.startswith("# Results\n") and "kept text" in text
    assert text.count("<!-- bench:about -->") == 1 and "| row | dtype | tokens/s" in text
    update_markdown(md, "docs.parquet", "### replaced")
    again = md.read_text()
    assert again.count("<!-- bench:docs.parquet -->") == 1 and "### replaced" in again
    assert again.count("<!-- bench:about -->") == 1 and "kept text" in again
    assert "| row | dtype" not in again


@pytest.mark.slow
def test_ray_row_agrees_with_in_process(setup, tmp_path):
    out = tmp_path / "bench.json"
    args = ["--docs", setup["docs"], "--model", setup["encoder"], "--dtype", "float32"]
    args += ["--max-length", str(MAX_LENGTH), "--stride", str(STRIDE), "--hf-batch-sizes", "1"]
    args += ["--json", str(out), "--workdir", str(tmp_path / "work")]
    assert bench.main(args) == 0
    result = json.loads(out.read_text())
    ray = result["rows"][-1]
    assert ray["row"].startswith("jobs.annotate")
    assert result["checks"]["ray_vs_in_process"]["entities"]["identical"]
    assert result["checks"]["ray_vs_in_process"]["vectors"]["min"] >= 0.999
    mem = ray["memory"]
    assert mem["driver_peak_mib"] > 50 and mem["worker_peak_mib"] > 50
    assert any("NerStage" in name for name in mem["workers_peak_mib"])
    roles = mem["cpu_s_by_role"]
    assert {"driver", "raylet", "gcs_server"} <= set(roles), roles
    assert any("NerStage" in name for name in roles)
    assert sum(roles.values()) == pytest.approx(mem["cpu_s"], abs=0.1)
    assert ray["terminated_after_exit"] == []
    ops = ray["operators"]
    assert any("NerStage" in op for op in ops) and any("StageWriter" in op for op in ops)
    assert all(m.get("function_body_time_s", 0) >= 0 for m in ops.values())


@pytest.mark.slow
def test_scale_run_reports_memory_and_time_split(tmp_path):
    from pipeline.bench.ray_rows import scale_runs, synthetic_documents

    tokenizer = tm.write_tokenizer(tmp_path / "tok")
    del tokenizer
    docs = synthetic_documents(50, str(tmp_path / "tok"), seed=1)
    assert docs.num_rows == 50 and len(set(docs.column("text").to_pylist())) == 50
    s = B.BenchSettings(max_length=64, docs_per_batch=32)
    (res,) = scale_runs([300], str(tmp_path / "tok"), s, tmp_path / "work", shard_docs=100)
    assert res["docs"] == 300 and res["job_docs_per_s"] > 0
    assert res["driver_peak_mib"] > 50 and res["worker_peak_mib"] > 50
    shares = res["operator_share"]
    assert abs(sum(shares.values()) - 1) < 0.01
    assert any("EmbedStage" in op for op in shares) and np.isfinite(res["wall_s"])


def test_scale_results_render_into_markdown(tmp_path):
    from pipeline.bench.suite import machine_info

    result = {
        "machine": machine_info(),
        "command": "python -m jobs.bench --scale 1000",
        "scale": [
            {
                "docs": 1000,
                "wall_s": 10.2,
                "job_wall_s": 8.0,
                "job_docs_per_s": 125.0,
                "driver_peak_mib": 400.0,
                "worker_peak_mib": 700.0,
                "tree_peak_mib": 3000.0,
                "operator_udf_s": {
                    "MapBatches(_read_shards)->MapBatches(Tokenize)": 1.0,
                    "MapBatches(NerStage)": 2.0,
                    "MapBatches(EmbedStage)": 1.0,
                    "MapBatches(StageWriter)": 0.0,
                },
                "operator_max_uss_mib": {
                    "MapBatches(NerStage)": 321.0,
                    "MapBatches(Tokenize)": 99.0,
                },
            }
        ],
    }
    src, md = tmp_path / "scale.json", tmp_path / "README.md"
    src.write_text(json.dumps(result))
    md.write_text("# Project\n\n<!-- bench:scale -->\nold\n<!-- /bench:scale -->\n\n## After\n")
    assert bench.main(["--render", str(src), "--markdown", str(md)]) == 0
    text = md.read_text()
    # tokenize 1 s of 4, inference 3 of 4, write none; USS: the largest operator's.
    assert "| 1,000 | 10 | 8 | 125 | 400 | 700 | 321 | 3,000 | 25% | 75% | 0% |" in text
    assert "`python -m jobs.bench --scale 1000`" in text and "old" not in text
    assert text.index("<!-- bench:about -->") < text.index("<!-- bench:scale -->")
    assert text.endswith("## After\n")


def test_process_roles_from_command_lines():
    from pipeline.bench.ray_rows import _role

    assert _role(["ray::MapWorker(MapBatches(NerStage))"]) == "ray::MapWorker(MapBatches(NerStage))"
    assert _role(["/venv/lib/ray/core/src/ray/raylet/raylet", "--node_id=x"]) == "raylet"
    py = ["/venv/bin/python3.11", "-u", "/venv/lib/ray/dashboard/agent.py", "--port=1"]
    assert _role(py) == "agent.py"
    assert _role(["/venv/bin/python3.11", "-m", "jobs.annotate"]) == "python3.11"
    assert _role([]) == ""


def test_repeat_documents_tiles_texts_with_fresh_ids():
    table = pa.table({"doc_id": ["0", "1"], "text": ["a b", "c"]})
    got = B.repeat_documents(table, 3)
    assert got.column("text").to_pylist() == ["a b", "c"] * 3
    assert got.column("doc_id").to_pylist() == [str(i) for i in range(6)]
    assert B.repeat_documents(table, 1) is table
    with pytest.raises(ValueError, match="--repeat"):
        B.repeat_documents(table, 0)


def test_skip_baselines_with_repeat_keeps_our_rows_and_their_targets(setup, tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = ["--docs", setup["docs"], "--model", setup["encoder"], "--skip-ray"]
    args += ["--max-length", str(MAX_LENGTH), "--stride", str(STRIDE), "--dtype", "float32"]
    args += ["--skip-baselines", "--repeat", "3", "--json", str(out)]
    args += ["--workdir", str(tmp_path / "work")]
    assert bench.main(args) == 0
    result = json.loads(out.read_text())
    assert [r["row"] for r in result["rows"]] == [
        "ours: NER stage",
        "ours: embedding stage",
        "ours: context stage (sentences, sections, ConText)",
        "ours in process: NER + embedding (sum)",
    ]
    ctx = result["rows"][2]
    texts = B.repeat_documents(B.load_documents(setup["docs"], None), 3).column("text")
    assert ctx["text_mb"] == round(sum(len(t.as_py().encode()) for t in texts) / 1e6, 3)
    assert ctx["mb_per_cpu_s"] > 0 and ctx["padding"] is None
    kept = len(setup["kept"])
    assert result["corpus"]["docs"] == 3 * kept and result["corpus"]["repeat"] == 3
    single = B.prepare_corpus(
        B.load_documents(setup["docs"], None), setup["encoder"], B.BenchSettings(MAX_LENGTH, STRIDE)
    )
    assert result["corpus"]["window_tokens"] == 3 * single.window_tokens
    assert "ner_vs_pipeline" not in result["checks"]
    assert [t["target"].split()[0] for t in result["targets"]] == [">=", "Padding"]
    assert "MB of note text" in result["targets"][0]["target"]
    assert f"({kept} distinct, each 3 times)" in capsys.readouterr().out


def test_context_only_runs_the_ner_stage_then_the_context_row(setup, tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = ["--docs", setup["docs"], "--model", setup["encoder"], "--context-only"]
    args += ["--max-length", str(MAX_LENGTH), "--stride", str(STRIDE), "--dtype", "float32"]
    args += ["--json", str(out), "--workdir", str(tmp_path / "work")]
    assert bench.main(args) == 0
    result = json.loads(out.read_text())
    assert [r["row"] for r in result["rows"]] == [
        "ours: NER stage",
        "ours: context stage (sentences, sections, ConText)",
    ]
    ctx = result["rows"][1]
    assert ctx["entities"] > 0 and ctx["mb_per_cpu_s"] > 0
    assert [t["target"] for t in result["targets"]] == [
        ">= 2 MB of note text per second per core for sentences + sections + context"
    ]
    assert "MB of text per CPU second" in capsys.readouterr().out


def test_the_link_index_memory_probe_measures_an_index_of_the_size_asked(setup, tmp_path):
    from pipeline.bench.link_rows import index_memory

    terms = tmp_path / "terms.parquet"
    pq.write_table(pa.table({"concept_id": ["D1", "D2", "D3"],
                             "name": ["alpha beta", "gamma", "delta epsilon"]}), terms)  # fmt: skip
    m = index_memory(str(terms), setup["encoder"], 1000, tmp_path)
    assert m["names"] == 1000  # three names repeated with suffixes, all distinct
    assert m["vector_mib"] == pytest.approx(1000 * m["dim"] * 2 / 2**20)  # float16
    assert m["peak_mib"] >= m["peak_after_model_mib"] > 0
    assert m["exact_first"] == 3  # each mention is one of the names: found exactly
