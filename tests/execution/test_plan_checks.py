"""What the plan refuses before Ray or any model starts: each with a message naming the
flag, column or model at fault (in process, tiny models)."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import tiny_models as tm

from pipeline import schemas as S
from pipeline.config import AnnotateConfig, ModelSpec
from pipeline.execution.plan import make_plan
from pipeline.types import InputError


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return tm.write_random_encoder(tmp_path_factory.mktemp("enc") / "m", max_positions=64)


def _input(tmp_path, table: pa.Table | None = None) -> str:
    inp = tmp_path / "in"
    inp.mkdir(exist_ok=True)
    pq.write_table(table or pa.table({"doc_id": ["a"], "text": ["b"]}), inp / "p0.parquet")
    return str(inp)


def _cfg(tmp_path, model, max_length=None, **kw) -> AnnotateConfig:
    embed = ModelSpec(str(model), "embed", max_length)
    return AnnotateConfig(
        _input(tmp_path, kw.pop("table", None)), str(tmp_path / "o"), None, embed, **kw
    )


def test_a_window_longer_than_the_position_table_is_refused(tmp_path, encoder):
    with pytest.raises(InputError, match=r"--max-length 65 .* position table holds 64 tokens"):
        make_plan(_cfg(tmp_path, encoder, 65))
    assert make_plan(_cfg(tmp_path, encoder, 64)).models["embed"].max_length == 64


def test_a_window_with_no_room_for_text_names_the_flag(tmp_path, encoder):
    with pytest.raises(InputError, match="--max-length 2 leaves no room"):
        make_plan(_cfg(tmp_path, encoder, 2))


def test_a_distilbert_style_config_gives_the_width_from_dim(tmp_path, encoder):
    model = tmp_path / "distil"
    shutil.copytree(encoder, model)
    cfg = json.loads((model / "config.json").read_text())
    cfg["dim"] = cfg.pop("hidden_size")
    (model / "config.json").write_text(json.dumps(cfg))
    assert make_plan(_cfg(tmp_path, model)).models["embed"].dim == cfg["dim"]
    del cfg["dim"]
    (model / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="names no hidden size"):
        make_plan(_cfg(tmp_path, model))


def test_the_text_column_cannot_serve_as_ids(tmp_path, encoder):
    with pytest.raises(InputError, match="--id-column and --text-column are both 'text'"):
        make_plan(_cfg(tmp_path, encoder, id_column="text"))


@pytest.mark.parametrize(
    "ids",
    [pa.array([["a"]]), pa.array([{"x": 1}]), pa.array([True])],
    ids=["list", "struct", "bool"],
)
def test_an_id_column_of_another_type_is_refused_before_any_work(tmp_path, encoder, ids):
    table = pa.table({"doc_id": ids, "text": ["b"]})
    with pytest.raises(InputError, match=r"p0.parquet: id column 'doc_id' has type"):
        make_plan(_cfg(tmp_path, encoder, table=table))


@pytest.mark.parametrize(
    "ids", [pa.array([7]), pa.array([7.0]), pa.array([b"x"]), pa.array(["x"]).dictionary_encode()]
)
def test_number_bytes_and_dictionary_ids_are_accepted(tmp_path, encoder, ids):
    table = pa.table({"doc_id": ids, "text": ["b"]})
    assert len(make_plan(_cfg(tmp_path, encoder, table=table)).todo) == 1


def test_a_shard_with_two_text_columns_is_refused(tmp_path, encoder):
    table = pa.Table.from_arrays(
        [pa.array(["a"]), pa.array(["b"]), pa.array(["c"])], names=["doc_id", "text", "text"]
    )
    with pytest.raises(InputError, match="p0.parquet has 2 columns 'text'"):
        make_plan(_cfg(tmp_path, encoder, table=table))


def test_the_fingerprint_changes_with_the_tokenizer_and_the_labels_not_only_the_weights(
    tmp_path,
):
    """A resume into an output is refused when its fingerprint differs: a model folder
    whose weights stayed but whose tokenizer or labels changed gives other rows."""
    base = tm.write_random_ner(tmp_path / "ner", max_positions=64)

    def fp(model) -> str:
        cfg = AnnotateConfig(_input(tmp_path), str(tmp_path / "o"), ModelSpec(str(model), "ner"))
        return make_plan(cfg).fingerprint

    same = tmp_path / "same"
    shutil.copytree(base, same)
    assert fp(same) == fp(base)  # where the folder lies does not matter
    cased = tmp_path / "cased"
    shutil.copytree(base, cased)
    tm.write_tokenizer(cased, lowercase=False)
    relabelled = tmp_path / "relabelled"
    shutil.copytree(base, relabelled)
    cfg = json.loads((relabelled / "config.json").read_text())
    cfg["id2label"] = {k: v.replace("Disease", "Chemical") for k, v in cfg["id2label"].items()}
    assert cfg["id2label"] != json.loads((base / "config.json").read_text())["id2label"]
    (relabelled / "config.json").write_text(json.dumps(cfg))
    assert len({fp(base), fp(cased), fp(relabelled)}) == 3


def test_the_fingerprint_changes_with_ner_decoding_only_when_there_is_a_ner_model(tmp_path):
    """Greedy and Viterbi shards mixed in one output would disagree on entities."""
    ner = tm.write_random_ner(tmp_path / "ner", max_positions=64)
    emb = tm.write_random_ner(tmp_path / "emb", max_positions=64)

    def fp(decoding: str, with_ner: bool) -> str:
        cfg = AnnotateConfig(
            _input(tmp_path), str(tmp_path / "o"),
            ModelSpec(str(ner), "ner") if with_ner else None, ModelSpec(str(emb), "embed"),
            decoding=decoding,
        )  # fmt: skip
        return make_plan(cfg).fingerprint

    assert fp("viterbi", True) != fp("greedy", True)
    assert fp("viterbi", False) == fp("greedy", False)


def test_an_unreadable_label_set_is_refused_before_any_work(tmp_path):
    model = tm.write_random_ner(tmp_path / "ner", max_positions=64)
    cfg = json.loads((model / "config.json").read_text())
    cfg["id2label"] = {"0": "O", "1": "B-Disease", "2": "Chemical"}  # BIO and IO mixed
    (model / "config.json").write_text(json.dumps(cfg))
    spec = ModelSpec(str(model), "ner")
    with pytest.raises(InputError, match=r"NER model .*unsupported NER label set.*Chemical"):
        make_plan(AnnotateConfig(_input(tmp_path), str(tmp_path / "o"), spec))


def test_auto_precision_follows_the_hardware_and_a_resume_keeps_one():
    """``--dtype auto`` started on GPUs (bf16) and resumed on CPUs (fp32) would mix the
    two in one output: refused, naming the flag that keeps one precision."""
    from pipeline.execution.sizing import check_precision, resolved_dtype
    from pipeline.types import RunPlan

    assert resolved_dtype("auto", {"CPU": 16.0, "GPU": 2.0}) == "bfloat16"
    assert resolved_dtype("auto", {"CPU": 16.0}) == "float32"
    assert resolved_dtype("float16", {"CPU": 16.0}) == "float16"
    rp = RunPlan({}, {}, [], [], [])
    rp.committed = {"a": {"dtype": "bfloat16"}, "b": {"dtype": "bfloat16"}, "c": {}}
    check_precision(rp, "bfloat16")  # the same precision (and a record without one) pass
    with pytest.raises(
        InputError, match=r"2 committed shards .* bfloat16, .* float32: pass --dtype bfloat16"
    ):
        check_precision(rp, "float32")


@pytest.mark.parametrize(
    "t,name",
    [
        (pa.int8(), "int64"),
        (pa.int64(), "int64"),
        (pa.uint32(), "int64"),
        (pa.dictionary(pa.int8(), pa.int32()), "int64"),
        (pa.uint64(), "string"),  # may not fit in int64
        (pa.float64(), "string"),
        (pa.string(), "string"),
        (pa.binary(), "string"),
        (pa.null(), "string"),
    ],
)
def test_integer_id_columns_keep_an_integer_type(t, name):
    assert S.id_type_name(t) == name


def test_the_output_id_type_is_the_inputs_when_every_shard_agrees(tmp_path, encoder):
    ints = pa.table({"doc_id": pa.array([7, 8], pa.int32()), "text": ["b", "c"]})
    int_plan = make_plan(_cfg(tmp_path, encoder, table=ints))
    assert int_plan.id_type == "int64"
    assert int_plan.output_schemas()["documents"].field("doc_id").type == pa.int64()
    pq.write_table(pa.table({"doc_id": ["x"], "text": ["b"]}), tmp_path / "in" / "p1.parquet")
    mixed = make_plan(_cfg(tmp_path, encoder, table=ints))
    assert mixed.id_type == "string"  # one schema over every file of a table
    assert mixed.fingerprint != int_plan.fingerprint
