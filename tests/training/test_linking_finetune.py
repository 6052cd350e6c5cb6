"""Linking fine-tuning: pairs, batches, the loss and the encoding on hand-built inputs, and
the real CLI (``--task linking``) on a tiny random BERT and a toy dictionary."""

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
import torch
from safetensors.numpy import load_file
from support.tiny_models import CHEM_B, CHEM_I, DISEASE_B, DISEASE_I, PLAIN, write_random_encoder

from jobs import finetune as job
from pipeline import schemas as S
from pipeline.models import loading as models
from pipeline.training.link_data import (
    PairSource,
    length_chunks,
    pair_batches,
    read_mentions,
    top1_concepts,
)
from pipeline.training.link_finetune import pooling_files
from pipeline.training.link_loop import MultiSimilarity
from pipeline.training.name_encoder import (
    NameEncoder,
    embed_rows,
    multi_similarity_loss,
    with_specials,
)
from pipeline.training.stopping import PATIENCE, EarlyStopping

# Each concept has words of its own; the filler words, common to all, make an untrained
# model's nearest name often another concept's (they are most of a short name's tokens).
FILLERS = ["the", "of", "with", "acute", "chronic", "severe", "mild", "left", "right"]
WORDS = [w for w in DISEASE_B + CHEM_B + DISEASE_I + CHEM_I + PLAIN if w not in FILLERS]
CONCEPTS = {f"C{i}": WORDS[4 * i : 4 * i + 4] for i in range(8)}
SKIPPED = {"composite": "C0|C1", "unlinked": "-1", "no_concept": None}
TRAIN_ARGS = ["--epochs", "4", "--lr", "2e-3", "--batch-pairs", "16", "--seed", "3"]
ROOT = Path(__file__).resolve().parents[2]


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


def phrase(rng: random.Random, word: str) -> str:
    """A concept word with one or two filler words around it."""
    a, b = rng.sample(FILLERS, 2)
    return " ".join(rng.choice([[a, word], [word, b], [a, word, b]]))


def write_toy(root: Path, seed: int = 0) -> dict:
    """A dictionary (two bare words and one phrase per concept; its fourth word only in
    mentions), documents whose gold mentions are phrases of a concept's words, a few
    mentions to skip (SKIPPED), and held-out phrases of every concept's words."""
    rng = random.Random(seed)
    names = []
    for cid, words in CONCEPTS.items():
        names += [(cid, words[0]), (cid, words[1]), (cid, phrase(rng, words[2]))]
    doc_ids, texts, rows = [], [], []
    for d in range(40):
        text = ""
        for k in range(3):
            cid = rng.choice(list(CONCEPTS))
            mention = phrase(rng, rng.choice(CONCEPTS[cid][1:]))
            text += "no history of "
            gold = list(SKIPPED.values())[d] if d < len(SKIPPED) and k == 0 else cid
            rows.append((f"d{d}", len(text), len(text) + len(mention), mention, gold))
            text += mention + " . "
        doc_ids.append(f"d{d}")
        texts.append(text)
    heldout = [(phrase(rng, w), cid) for cid, ws in CONCEPTS.items() for w in ws for _ in "ab"]
    dev_rows = [(f"v{i}", 0, len(t), t, cid) for i, (t, cid) in enumerate(heldout)]
    paths = {k: str(root / f"{k}.parquet") for k in ("dict", "docs", "ents", "dev_docs", "dev")}
    names_t = pa.table({"concept_id": [c for c, _ in names], "name": [n for _, n in names]})
    pq.write_table(names_t, paths["dict"])
    pq.write_table(pa.table({S.DOC_ID: doc_ids, S.TEXT: texts}), paths["docs"])
    pq.write_table(_entities(rows), paths["ents"])
    dev_docs = pa.table({S.DOC_ID: [r[0] for r in dev_rows], S.TEXT: [r[3] for r in dev_rows]})
    pq.write_table(dev_docs, paths["dev_docs"])
    pq.write_table(_entities(dev_rows), paths["dev"])
    return {"paths": paths, "names": names, "heldout": heldout, "mentions": len(rows)}


def _entities(rows: list[tuple]) -> pa.Table:
    cols = list(zip(*rows))
    return pa.table(
        {
            S.DOC_ID: pa.array(cols[0]),
            S.START: pa.array(cols[1], pa.int32()),
            S.END: pa.array(cols[2], pa.int32()),
            S.TEXT: pa.array(cols[3]),
            S.LABEL: pa.array(["Disease"] * len(rows)),
            S.CONCEPT_ID: pa.array(cols[4], pa.string()),
        }
    )


def declare_pooling(folder: Path, mean: bool = True) -> None:
    """A sentence-transformers pooling declaration, as all-MiniLM-L6-v2 has."""
    st = "sentence_transformers.models."
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": st + "Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": st + "Pooling"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    flags = {"pooling_mode_mean_tokens": mean, "pooling_mode_cls_token": not mean}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(flags))


def hf_vectors(model_dir: str, texts: list[str]) -> np.ndarray:
    """Vectors as a reader of the folder computes them, independently of the training
    code: the tokenizer's padded batch, AutoModel, the folder's declared pooling."""
    from transformers import AutoModel, AutoTokenizer

    from pipeline.stages.embed import pool

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    pooling = models.default_pooling(Path(model_dir), model_dir)
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    vectors = pool(hidden, batch["attention_mask"], pooling)
    return torch.nn.functional.normalize(vectors, dim=-1).numpy()


def heldout_acc1(model_dir: str, toy: dict) -> float:
    """Share of held-out phrases whose nearest dictionary name is their concept's."""
    names = hf_vectors(model_dir, [n for _, n in toy["names"]])
    queries = hf_vectors(model_dir, [t for t, _ in toy["heldout"]])
    codes = np.arange(len(toy["names"]))
    nearest = top1_concepts(queries, names, codes)
    return float(np.mean([toy["names"][i][0] == c for i, (_, c) in zip(nearest, toy["heldout"])]))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("link-finetune")
    base = write_random_encoder(root / "base")
    declare_pooling(base)
    return {"root": root, "base": str(base), "toy": write_toy(root)}


def finetune(setup: dict, out: Path, extra: list[str] = ()) -> dict:
    """The contract's call, on the toy data; returns training.json."""
    p = setup["toy"]["paths"]
    args = ["--task", "linking", "--train-entities", p["ents"], "--train-docs", p["docs"]]
    args += ["--dictionary", p["dict"], "--base-model", setup["base"], "--output", str(out)]
    proc = run_cli(
        "jobs.finetune", [*args, *TRAIN_ARGS, "--cpus-per-worker", "1", *extra], setup["root"]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "training.json").read_text())


@pytest.fixture(scope="module")
def trained(setup: dict) -> tuple[Path, dict]:
    out = setup["root"] / "model-a"
    return out, finetune(setup, out)


def test_epoch_pairs_cover_every_mention_and_synonym_set() -> None:
    # strings 0-4 names, 5-9 mention surfaces; forms: 1 and 6 read the same normalized
    forms = np.array([0, 1, 2, 3, 4, 5, 1, 7, 8, 9])
    names = [np.array([0, 1]), np.array([2]), np.array([3, 4]), np.array([], np.int64)]
    mentions, concepts = np.array([6, 7, 8, 9]), np.array([0, 1, 3, 0])
    src = PairSource.build(names, mentions, concepts, forms)
    # mention 6 reads like name 1: paired with 0 or mention 9 instead; mention 8's
    # concept (not in the dictionary) has no other string; 9 may meet 0, 1 or 6.
    assert [c.tolist() for c in src.candidates] == [[0, 9], [2], [], [0, 1, 6]]
    assert (src.paired_concepts, src.paired_mentions) == (2, 3)
    a = src.epoch_pairs(np.random.default_rng([1, 1]))
    assert len(a) == 5
    anchors = sorted(map(tuple, a[:, [0, 2]].tolist()))
    assert [x for x in anchors if x[0] >= 5] == [(6, 0), (7, 1), (9, 0)]  # each mention once
    assert {c for s, c in anchors if s < 5} == {0, 2}  # one pair per synonym set
    for anchor, positive, c in a.tolist():
        assert anchor != positive and forms[anchor] != forms[positive]
        in_c = set(names[c].tolist()) | set(mentions[concepts == c].tolist())
        assert {anchor, positive} <= in_c
    again = [src.epoch_pairs(np.random.default_rng([1, 1])) for _ in range(2)]
    assert all(np.array_equal(a, x) for x in again)  # seeded
    others = [src.epoch_pairs(np.random.default_rng([1, e])) for e in range(2, 8)]
    assert any(not np.array_equal(a, x) for x in others)


def test_pair_batches_and_length_chunks() -> None:
    assert [len(b) for b in pair_batches(10, 4, 2)] == [4, 4, 2]
    assert [len(b) for b in pair_batches(9, 4, 2)] == [4, 5]  # 1 pair: no negative of its own
    assert [len(b) for b in pair_batches(10, 4, 3)] == [4, 6]  # 3 workers: one pair each
    assert np.concatenate(pair_batches(37, 8, 2)).tolist() == list(range(37))
    lengths = np.random.default_rng(0).integers(3, 40, size=101)
    chunks = length_chunks(lengths, 120)
    assert sorted(np.concatenate(chunks).tolist()) == list(range(101))
    assert all(len(c) * lengths[c].max() <= 120 for c in chunks)
    assert all(lengths[c].max() <= lengths[d].min() for c, d in zip(chunks, chunks[1:]))
    assert [c.tolist() for c in length_chunks(np.array([500, 5, 5]), 100)] == [[1, 2], [0]]


def test_multi_similarity_loss_is_zero_once_concepts_separate() -> None:
    params = MultiSimilarity()
    labels = torch.tensor([0, 0, 1, 1])
    apart = torch.tensor([[1.0, 0], [1, 0], [-1, 0], [-1, 0]])
    assert float(multi_similarity_loss(apart, labels, params)) == 0.0  # no pair mined
    mixed = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1], [0.1, 1], [1, 0], [0, 1]]))
    mixed.requires_grad_(True)
    loss = multi_similarity_loss(mixed, labels, params)
    assert float(loss.detach()) > 0.1
    loss.backward()
    moved = torch.nn.functional.normalize(mixed.detach() - 0.1 * mixed.grad)
    assert float(multi_similarity_loss(moved, labels, params)) < float(loss.detach())


def test_early_stopping_names_the_linking_score() -> None:
    stopping = EarlyStopping(5, 1, metric="dev acc@1")
    assert stopping.update(1, 0.5) and not stopping.update(2, 0.5)
    assert stopping.reason == PATIENCE
    assert stopping.describe() == "dev acc@1 did not improve for 1 epochs after epoch 1"
    assert EarlyStopping(5, 1).metric == "dev strict F1"  # the NER default is unchanged


def test_training_vectors_are_the_readers_vectors(setup: dict) -> None:
    """What the loss sees is what the output folder's readers compute: specials around
    the tokens, the declared pooling, L2 norm; alone or in any padded chunk."""
    from transformers import AutoModel

    base = setup["base"]
    texts = ["diabetes", "severe asthma of the left", "the", "aspirin with heparin sodium"]
    tok = models.load_tokenizer(Path(base))
    content = [np.asarray(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    from pipeline.stages.tokenize import special_tokens

    rows = with_specials(content, 64, special_tokens(tok))
    encoder = NameEncoder(AutoModel.from_pretrained(base).eval(), "mean")
    ours = embed_rows(encoder, rows, 12, tok.pad_token_id, torch.device("cpu"))
    np.testing.assert_allclose(ours, hf_vectors(base, texts), atol=1e-5)
    assert rows[1][0] == tok.cls_token_id and rows[1][-1] == tok.sep_token_id
    cut = with_specials(content, 4, special_tokens(tok))[1]
    assert len(cut) == 4 and cut[-1] == tok.sep_token_id  # specials kept when cut


def test_pooling_declaration_makes_the_output_pool_as_trained(tmp_path: Path) -> None:
    declared = write_random_encoder(tmp_path / "declared")
    declare_pooling(declared, mean=False)
    plain = write_random_encoder(tmp_path / "plain")
    sapbert = write_random_encoder(tmp_path / "SapBERT-tiny")
    for base, expected in ((declared, "cls"), (plain, "mean"), (sapbert, "cls")):
        pooling = models.default_pooling(base, str(base))
        assert pooling == expected
        out = tmp_path / f"out-{base.name}"
        for rel, data in pooling_files(base, pooling, 32).items():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_bytes(data)
        assert models.default_pooling(out, "out") == expected
    copied = sorted(pooling_files(declared, "cls", 32))
    assert copied == ["1_Pooling/config.json", "modules.json"]


def test_read_mentions_counts_what_it_skips(setup: dict) -> None:
    p = setup["toy"]["paths"]
    m = read_mentions(p["docs"], p["ents"])
    assert (m.composite, m.unlinked, m.no_concept) == (1, 1, 1)
    gold = pq.read_table(p["ents"]).to_pylist()
    kept = [r for r in gold if r[S.CONCEPT_ID] not in SKIPPED.values()]
    assert m.surfaces == [r[S.TEXT] for r in kept]  # cut from the documents
    assert m.concept_ids == [r[S.CONCEPT_ID] for r in kept]


def test_bad_inputs_name_the_file_and_column(setup: dict, tmp_path: Path, capsys) -> None:
    p = setup["toy"]["paths"]
    args = ["--task", "linking", "--train-docs", p["docs"], "--base-model", setup["base"]]
    args += ["--output", str(tmp_path / "out")]
    missing = str(tmp_path / "no-such-dictionary.parquet")
    assert job.main([*args, "--train-entities", p["ents"], "--dictionary", missing]) == 2
    assert f"link dictionary not found: {missing}" in capsys.readouterr().err
    no_concept = str(tmp_path / "ents.parquet")
    pq.write_table(pq.read_table(p["ents"]).drop_columns([S.CONCEPT_ID]), no_concept)
    assert job.main([*args, "--train-entities", no_concept, "--dictionary", p["dict"]]) == 2
    err = capsys.readouterr().err
    assert no_concept in err and "'concept_id'" in err
    shifted = str(tmp_path / "shifted.parquet")
    ents = pq.read_table(p["ents"])
    starts = pa.array([s + 1 for s in ents[S.START].to_pylist()], pa.int32())
    pq.write_table(ents.set_column(1, S.START, starts), shifted)
    assert job.main([*args, "--train-entities", shifted, "--dictionary", p["dict"]]) == 2
    assert shifted in capsys.readouterr().err  # the text column disagrees with the document
    assert not (tmp_path / "out").exists()


def test_each_task_asks_for_its_flags(setup: dict, capsys) -> None:
    p = setup["toy"]["paths"]
    common = ["--train-docs", p["docs"], "--train-entities", p["ents"]]
    common += ["--base-model", setup["base"], "--output", "unused"]
    for argv, message in (
        (common, "--task ner needs --dev-docs and --dev-entities"),
        ([*common, "--dev-docs", p["docs"]], "--task ner needs --dev-docs and --dev-entities"),
        (["--task", "linking", *common], "--task linking needs --dictionary"),
    ):
        with pytest.raises(SystemExit) as exit_:
            job.main(argv)
        assert exit_.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.slow
def test_cli_trains_an_encoder_that_links_held_out_names(setup: dict, trained) -> None:
    out, report = trained
    losses = [e["train_loss"] for e in report["epochs"]]
    assert [e["epoch"] for e in report["epochs"]] == [1, 2, 3, 4]
    assert losses[-1] < 0.8 * losses[0]
    assert report["kept_epoch"] == 4 and report["best_dev_acc1"] is None  # no dev: the last
    counts = report["counts"]
    assert counts["train_mentions"]["kept"] == setup["toy"]["mentions"] - 3
    assert counts["train_mentions"]["composite"] == 1 and counts["train_mentions"]["unlinked"] == 1
    assert counts["concepts_with_two_names"] == len(CONCEPTS)
    assert counts["pairs_per_epoch"] == len(CONCEPTS) + counts["train_mentions"]["kept"]
    assert report["pooling"] == "mean" and report["max_length"] == 32
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    assert models.default_pooling(out, str(out)) == "mean"
    before = heldout_acc1(setup["base"], setup["toy"])
    after = heldout_acc1(str(out), setup["toy"])
    assert after >= 0.8 and after >= before + 0.3, (before, after)


@pytest.mark.slow
def test_same_seed_gives_identical_weights(setup: dict, trained) -> None:
    out, report = trained
    again = setup["root"] / "model-b"
    report_b = finetune(setup, again)
    a = load_file(str(out / "model.safetensors"))
    b = load_file(str(again / "model.safetensors"))
    base = load_file(str(Path(setup["base"]) / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert [e["train_loss"] for e in report_b["epochs"]] == [
        e["train_loss"] for e in report["epochs"]
    ]
    assert any(not np.array_equal(a[n], base[n]) for n in a if n in base)  # it trained


@pytest.mark.slow
def test_dev_mentions_are_scored_each_epoch_and_the_best_kept(setup: dict, trained) -> None:
    _, report = trained
    p = setup["toy"]["paths"]
    out = setup["root"] / "model-dev"
    dev = finetune(setup, out, ["--dev-docs", p["dev_docs"], "--dev-entities", p["dev"]])
    accs = [e["dev_acc1"] for e in dev["epochs"]]
    assert len(accs) == 4 and dev["base_dev_acc1"] is not None
    assert dev["kept_epoch"] == 1 + int(np.argmax(accs)) and dev["best_dev_acc1"] == max(accs)
    assert max(accs) >= dev["base_dev_acc1"] + 0.3
    # dev scoring does not disturb training: the same losses as without dev
    assert [e["train_loss"] for e in dev["epochs"]] == [e["train_loss"] for e in report["epochs"]]
    # the dev score is the folder's own: its readers' vectors give the same acc@1
    toy = setup["toy"]
    assert heldout_acc1(str(out), toy) == pytest.approx(dev["best_dev_acc1"], abs=1e-9)
