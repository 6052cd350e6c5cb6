"""Fine-tuning: step batching, folder upload, and the real CLI on a tiny random BERT."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from safetensors.numpy import load_file
from support.tiny_models import CHEM_B, DISEASE_B, DISEASE_I, PLAIN, write_random_ner

from pipeline import schemas as S
from pipeline.evaluation.scoring import score_spans
from pipeline.storage import files as storage
from pipeline.training.data import epoch_batches, random_crops

ROOT = Path(__file__).resolve().parents[2]
MAX_LENGTH = 16  # tokens per window: most documents span several windows
PROCEDURES = ["exam", "study", "blood pressure"]


def test_epoch_batches_cover_every_window_once() -> None:
    lengths = np.random.default_rng(0).integers(3, 40, size=203)
    budget = 120
    for world in (1, 3):
        a = epoch_batches(lengths, budget, world, np.random.default_rng([5, 1]))
        b = epoch_batches(lengths, budget, world, np.random.default_rng([5, 1]))
        c = epoch_batches(lengths, budget, world, np.random.default_rng([5, 2]))
        assert sorted(np.concatenate(a).tolist()) == list(range(203))
        assert all(len(x) >= world for x in a)
        assert [x.tolist() for x in a] == [x.tolist() for x in b]  # seeded
        assert [x.tolist() for x in a] != [x.tolist() for x in c]
        # padded size within the budget, save the one batch a short tail may join
        over = [x for x in a if len(x) * lengths[x].max() > budget]
        assert len(over) <= 1
    # grouped by length: far fewer padded tokens than batches of shuffled windows
    a = epoch_batches(lengths, budget, 1, np.random.default_rng(7))
    padded = sum(len(x) * int(lengths[x].max()) for x in a)
    perm = np.random.default_rng(7).permutation(203)
    k = budget // int(lengths.max())
    naive = sum(len(x) * int(lengths[x].max()) for x in np.array_split(perm, 203 // k))
    assert padded < 0.8 * naive
    # a window longer than the budget is trained alone, not dropped or cut
    long = epoch_batches(np.array([500, 5, 5]), 100, 1, np.random.default_rng(0))
    assert sorted(sorted(x.tolist()) for x in long) == [[0], [1, 2]]
    tiny = epoch_batches(np.ones(5, int), 4, 2, np.random.default_rng(0))
    assert sorted(len(x) for x in tiny) == [5]  # a 1-window tail cannot feed 2 workers


def test_upload_folder_to_s3(tmp_path: Path, s3_env: str) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "model.safetensors").write_bytes(b"\x00\x01weights")
    (tmp_path / "sub" / "vocab.txt").write_text("a\nb\n")
    storage.upload_folder(str(tmp_path), s3_env + "/model")
    fs, path = storage.filesystem(s3_env + "/model")
    assert fs.cat(path + "/model.safetensors") == b"\x00\x01weights"
    assert fs.cat(path + "/sub/vocab.txt") == b"a\nb\n"


def write_corpus(dest: Path, n_docs: int, seed: int) -> tuple[str, str, int]:
    """docs and entities Parquet files of invented text; returns their paths and the
    number of gold spans no token can carry (whitespace-only spans put in on purpose).
    One more span names a document that is not there."""
    rng = random.Random(seed)
    doc_ids, texts, rows = [], [], []
    n_blank = 0
    for i in range(n_docs):
        text = ""
        for _ in range(rng.randint(8, 30)):
            text += " " if text else ""
            r = rng.random()
            if r < 0.15:
                word, label = (
                    rng.choice(DISEASE_B) + rng.choice(["", " " + DISEASE_I[0]]),
                    "Disease",
                )
            elif r < 0.25:
                word, label = rng.choice(CHEM_B), "Chemical"
            elif r < 0.3:
                word, label = rng.choice(PROCEDURES), "Procedure"
            else:
                word, label = rng.choice(PLAIN), None
            if label:
                rows.append((f"d{i}", len(text), len(text) + len(word), label))
            text += word
        if i % 7 == 0:  # a gold span over whitespace alone
            rows.append((f"d{i}", len(text), len(text) + 2, "Disease"))
            text += "   the"
            n_blank += 1
        doc_ids.append(f"d{i}")
        texts.append(text)
    rows.append(("no-such-doc", 0, 4, "Disease"))  # a span whose document is missing
    docs, ents = str(dest / "docs.parquet"), str(dest / "entities.parquet")
    pq.write_table(pa.table({S.DOC_ID: doc_ids, S.TEXT: texts}), docs)
    cols = list(zip(*rows))
    table = pa.table(
        {
            S.DOC_ID: pa.array(cols[0]),
            S.START: pa.array(cols[1], pa.int32()),
            S.END: pa.array(cols[2], pa.int32()),
            S.LABEL: pa.array(cols[3]),
        }
    )
    pq.write_table(table, ents)
    return docs, ents, n_blank


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("finetune")
    base = write_random_ner(root / "base")  # its 5-label head gets replaced by a 7-label one
    (root / "train").mkdir()
    (root / "dev").mkdir()
    train_docs, train_ents, n_blank = write_corpus(root / "train", 60, seed=1)
    dev_docs, dev_ents, _ = write_corpus(root / "dev", 12, seed=2)
    return {
        "root": root,
        "base": str(base),
        "train": (train_docs, train_ents, n_blank),
        "dev": (dev_docs, dev_ents),
    }


def run_cli(module: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def finetune(setup: dict, out: Path, seed: int = 3) -> subprocess.CompletedProcess:
    train_docs, train_ents, _ = setup["train"]
    dev_docs, dev_ents = setup["dev"]
    args = ["--train-docs", train_docs, "--train-entities", train_ents, "--dev-docs", dev_docs]
    args += ["--dev-entities", dev_ents, "--base-model", setup["base"], "--output", str(out)]
    args += ["--epochs", "1", "--seed", str(seed), "--max-length", str(MAX_LENGTH)]
    args += ["--batch-tokens", "64", "--lr", "5e-3", "--cpus-per-worker", "1"]
    return run_cli("jobs.finetune", args, setup["root"])


@pytest.fixture(scope="module")
def trained(setup: dict) -> Path:
    out = setup["root"] / "model-a"
    proc = finetune(setup, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_random_crops_lie_inside_documents_and_vary_their_offset() -> None:
    lengths = [300, 40, 9, 1, 0, 2000]
    window = 126
    doc, start, length = random_crops(lengths, window, 20, np.random.default_rng([2, 0]))
    again = random_crops(lengths, window, 20, np.random.default_rng([2, 0]))
    assert (doc, start, length) == again  # seeded
    # A document of 0 or 1 tokens has no half-window to crop; the others get 20 each.
    assert sorted(set(doc)) == [0, 1, 2, 5] and all(doc.count(d) == 20 for d in (0, 1, 2, 5))
    for d, s, k in zip(doc, start, length):
        n = lengths[d]
        assert 1 <= k <= min(n, window) // 2 and 0 <= s and s + k <= n
    # Most crops must not begin where the document does: that is what they are for.
    assert sum(s > 0 for s in start) > 0.8 * len(start)
    assert len({k for d, k in zip(doc, length) if d == 5}) > 5


@pytest.mark.slow
def test_cli_writes_a_model_folder_with_report(setup: dict, trained: Path) -> None:
    cfg = json.loads((trained / "config.json").read_text())
    expected = ["O", "B-Chemical", "I-Chemical", "B-Disease", "I-Disease"]
    expected += ["B-Procedure", "I-Procedure"]
    assert [cfg["id2label"][str(i)] for i in range(len(expected))] == expected
    assert {cfg["label2id"][v] for v in expected} == set(range(len(expected)))
    assert (trained / "model.safetensors").exists() and (trained / "tokenizer.json").exists()
    report = json.loads((trained / "training.json").read_text())
    train_al = report["alignment"]["train"]
    n_gold = pq.read_table(setup["train"][1]).num_rows
    assert train_al["n_spans"] == n_gold
    assert train_al["unaligned"] == setup["train"][2] > 0
    assert train_al["no_document"] == 1
    assert train_al["aligned"] == n_gold - setup["train"][2] - 1
    assert [e["epoch"] for e in report["epochs"]] == [1] and report["best_epoch"] == 1
    assert report["counts"]["train_windows"] > report["counts"]["train_docs"]  # windowed
    assert report["peak_rss_mib"]["worker_rank0"] > 0 and report["fit_seconds"] > 0


@pytest.mark.slow
def test_annotate_loads_the_model_and_reproduces_the_dev_score(setup: dict, trained: Path) -> None:
    out = setup["root"] / "annotated"
    dev_docs, dev_ents = setup["dev"]
    args = ["--input", dev_docs, "--output", str(out), "--ner-model", str(trained)]
    proc = run_cli("jobs.annotate", args + ["--max-length", str(MAX_LENGTH)], setup["root"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    entities = storage.read_parquet_table(str(out / S.ENTITIES_DIR))
    assert entities.schema.remove_metadata().equals(S.entity_schema())
    # The dev score recorded in training is the job's own decoding of the same model.
    report = json.loads((trained / "training.json").read_text())
    gold = pq.read_table(dev_ents)
    scored = score_spans(gold, entities, pq.read_table(dev_docs)[S.DOC_ID].to_pylist())
    assert scored.strict.micro.to_dict() == report["epochs"][0]["dev_strict"]
    assert scored.n_pred > 0


@pytest.mark.slow
def test_same_seed_gives_identical_weights(setup: dict, trained: Path) -> None:
    again = setup["root"] / "model-b"
    proc = finetune(setup, again)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = load_file(str(trained / "model.safetensors"))
    b = load_file(str(again / "model.safetensors"))
    base = load_file(str(Path(setup["base"]) / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    # Training moved the encoder's weights, so equality above is not trivial.
    moved = [n for n in a if n in base and a[n].shape == base[n].shape]
    assert moved and any(not np.array_equal(a[n], base[n]) for n in moved)


def test_demo_model_is_reused_once_complete(tmp_path: Path) -> None:
    from pipeline.sample.demo_model import DEMO_DIR, MARKER, ensure_demo_ner_model

    (tmp_path / DEMO_DIR).mkdir()
    (tmp_path / DEMO_DIR / MARKER).write_text("{}")
    assert ensure_demo_ner_model(tmp_path) == tmp_path / DEMO_DIR
    assert sorted(p.name for p in tmp_path.iterdir()) == [DEMO_DIR]  # nothing rebuilt
