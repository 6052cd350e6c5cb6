"""The dataset graph cuts a shard into blocks of the batch size (on a real local Ray),
and runs shards as datasets of a bounded number of blocks."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import ray

from pipeline.execution import graph, sizing
from pipeline.execution.plan import shard_groups
from pipeline.types import Shard


def _one_shard() -> ray.data.Dataset:
    def read(batch: dict) -> object:  # a shard read as three batches of ten documents
        for i in range(3):
            yield {"doc": np.arange(10) + 10 * i}

    items = ray.data.from_items([{"shard": "s0"}])
    return items.map_batches(read, batch_size=1, num_cpus=sizing.LIGHT_CPUS)


def test_a_shard_becomes_blocks_of_the_batch_size(local_ray) -> None:
    # Why the cut is needed: the reader's batches of one shard leave it as one block.
    assert _one_shard().materialize().num_blocks() == 1
    cut = graph._blocks_of(_one_shard(), 10).materialize()
    assert cut.num_blocks() == 3
    assert sorted(cut.to_pandas()["doc"].tolist()) == list(range(30))


def test_shards_are_grouped_into_datasets_of_at_most_max_blocks() -> None:
    rows = {"a": 10, "b": 0, "c": 3, "d": 4, "e": 25, "f": 1}
    shards = [Shard(f"s3://x/{k}", k, n) for k, n in rows.items()]
    groups = shard_groups(shards, docs_per_block=4, max_blocks=3)
    # blocks: a 3, c 1, d 1, e 7 (over the cap: alone), f 1; b has no rows
    assert [[s.key for s in g] for g in groups] == [["a"], ["c", "d"], ["e"], ["f"]]
    assert shard_groups(shards, docs_per_block=4, max_blocks=100) == [
        [s for s in shards if s.n_rows]
    ]
    assert shard_groups([Shard("u", "k", 0)], 4, 3) == []


def test_tokenizers_keep_up_with_gpu_actors_and_stay_single_on_cpu() -> None:
    from pipeline.config import Scheduling

    assert sizing.tokenizer_actors(Scheduling(), n_actors=4, gpus=8) == 8
    assert sizing.tokenizer_actors(Scheduling(), n_actors=1, gpus=0) == 1
    assert sizing.tokenizer_actors(Scheduling(tokenizer_actors=3), n_actors=4, gpus=8) == 3


def test_small_inputs_get_smaller_batches_so_that_the_models_overlap() -> None:
    from pipeline.config import CPU_DOCS_PER_BATCH, GPU_DOCS_PER_BATCH, Scheduling

    cpu, gpus = {"CPU": 2.0}, {"CPU": 16.0, "GPU": 8.0}
    size = lambda n, cluster=cpu, **kw: sizing.docs_per_batch(Scheduling(**kw), n, 2, cluster)  # noqa: E731
    # 120 documents, one actor per model: 8 batches of 15, not two of 64
    assert size(120) == 15
    assert size(121) == 16  # rounded up: never a ninth batch of one document
    assert size(120, num_actors=2) == 8  # four actors
    assert size(5) == 1 and size(0) == 1
    # large inputs keep the device defaults; 8 GPUs: 4 actors a model
    assert size(10**6) == CPU_DOCS_PER_BATCH
    assert size(10**6, gpus) == GPU_DOCS_PER_BATCH
    assert size(3200, gpus) == 100
    # a size asked for is kept, however small the input
    assert size(120, docs_per_batch=64) == 64


def test_gpu_passes_are_as_large_as_the_model_width_leaves_room_for() -> None:
    from pipeline.config import (
        CPU_BATCH_TOKENS,
        GPU_ACTIVATION_BYTES,
        GPU_MAX_BATCH_TOKENS,
        Scheduling,
    )

    def budget(width, dtype="auto", gpus=1, **kw):
        return sizing.batch_tokens(Scheduling(**kw), width, dtype, gpus)

    assert budget(768, gpus=0) == CPU_BATCH_TOKENS
    assert budget(768, batch_tokens=4096) == budget(768, gpus=0, batch_tokens=4096) == 4096
    # BERT-base and -large in bf16: the H100's best measured (NER 1.77M real tokens/s at
    # 65536, 1.37M at the former 16384, 1.66M at 131072)
    assert budget(768) == budget(1024) == 65536
    assert budget(None) == 16384  # a config without a width: the former default
    for width in (128, 768, 1024, 2560, 3072, 4096, 8192, 10**6):
        for dtype, n_bytes in (("auto", 2), ("bfloat16", 2), ("float32", 4)):
            n = budget(width, dtype)
            assert n & (n - 1) == 0 and 1024 <= n <= GPU_MAX_BATCH_TOKENS  # a power of two
            # ~16 width-sized vectors a token live in a layer: they fit; twice as many not
            memory = lambda tokens: 16 * width * n_bytes * tokens  # noqa: B023, E731
            assert memory(n) <= GPU_ACTIVATION_BYTES or n == 1024
            assert n == GPU_MAX_BATCH_TOKENS or memory(2 * n) > GPU_ACTIVATION_BYTES
    assert budget(4096) == 16384 and budget(768, "float32") == 32768


def test_each_model_gets_the_budget_of_its_own_width(tmp_path) -> None:
    import json
    from types import SimpleNamespace

    from pipeline.config import Scheduling
    from pipeline.models.loading import ModelInfo
    from pipeline.types import RunPlan

    infos = {}
    for role, width in (("ner", 768), ("embed", 4096)):
        (tmp_path / role).mkdir()
        (tmp_path / role / "config.json").write_text(json.dumps({"hidden_size": width}))
        infos[role] = ModelInfo("m", str(tmp_path / role), "bert", 512, "w", None, dim=8)
    rp = RunPlan(infos, {}, [], [], [])
    cfg = SimpleNamespace(dtype="auto")
    gpus = {"CPU": 16.0, "GPU": 8.0}
    assert sizing.run_batch_tokens(rp, cfg, Scheduling(), gpus) == {"ner": 65536, "embed": 16384}
    assert sizing.run_batch_tokens(rp, cfg, Scheduling(), {"CPU": 2.0}) == {
        "ner": 16384,
        "embed": 16384,
    }


def test_a_rerun_cuts_the_batches_of_the_first_run() -> None:
    """The size counts committed shards too: a resumed run must not batch (and so round)
    the shards it redoes differently from an uninterrupted run."""
    from pipeline.config import Scheduling
    from pipeline.models.loading import ModelInfo
    from pipeline.types import RunPlan

    infos = {r: ModelInfo("m", f"/m/{r}", "bert", 512, "w", None, dim=8) for r in ("ner", "embed")}
    shards = [Shard(f"in/{k}.parquet", k, 30) for k in "abcd"]
    first = RunPlan(infos, {}, shards, shards, [])
    rerun = RunPlan(infos, {}, shards, shards[3:], shards[:3])
    cpu = {"CPU": 2.0}
    assert sizing.run_batch_size(first, Scheduling(), cpu) == 15  # 120 docs, 2 actors
    assert sizing.run_batch_size(rerun, Scheduling(), cpu) == 15
    assert sizing.run_batch_size(rerun, Scheduling(num_actors=2), cpu) == 8  # 4 actors


def test_tokenizer_actors_flag_reaches_the_scheduling() -> None:
    from jobs.annotate import parse_args, to_config

    base = ["--input", "in", "--output", "out", "--ner-model", "m"]
    assert to_config(parse_args([*base, "--tokenizer-actors", "3"]))[1].tokenizer_actors == 3
    assert to_config(parse_args(base))[1].tokenizer_actors is None


def _operators(ds: ray.data.Dataset) -> list[str]:
    """The dataset's logical operators, first to last."""
    names, op = [], ds._logical_plan.dag
    while op is not None:
        names.append(op.name)
        op = op.input_dependencies[0] if op.input_dependencies else None
    return names[::-1]


@pytest.mark.parametrize("digests,n_stages", [(("t", "t"), 1), (("t", "u"), 2)])
def test_models_sharing_a_tokenizer_tokenize_once(local_ray, digests, n_stages) -> None:
    from pipeline.config import AnnotateConfig, ModelSpec, Scheduling
    from pipeline.models.loading import ModelInfo, TokenizerDef
    from pipeline.types import RunPlan

    roles = ("ner", "embed")
    infos = {r: ModelInfo("m", f"/models/{r}", "bert", 512, "w", None, dim=8) for r in roles}
    tokenizers = {r: TokenizerDef(f'{{"vocab": "{d}"}}') for r, d in zip(roles, digests)}
    cfg = AnnotateConfig("in", "out", ModelSpec("m", "ner"), ModelSpec("m", "embed"))
    shards = [Shard("in/a.parquet", "a", 10)]
    rp = RunPlan(infos, {r: 128 for r in roles}, shards, shards, [], tokenizers=tokenizers)
    budgets = {r: 16384 for r in roles}
    ops = _operators(graph.build_dataset(rp, cfg, Scheduling(), shards, 4, budgets, {"CPU": 2.0}))
    assert ops.count("MapBatches(Tokenize)") == n_stages
    assert ops.index("MapBatches(Tokenize)") < ops.index("MapBatches(NerStage)")
    assert ops[-3:] == ["MapBatches(NerStage)", "MapBatches(EmbedStage)", "MapBatches(StageWriter)"]


def test_only_the_model_actors_import_torch() -> None:
    """The graph's module (which read tasks load for their function), the writer's, the
    output folder's and the stage classes the driver hands Ray import no torch: on a 2-core
    machine each torch import is seconds of CPU taken from the models."""
    code = (
        "import sys\n"
        "import pipeline.execution.graph, pipeline.storage.output, pipeline.stages.write\n"
        "from pipeline.stages.ner import NerStage\n"
        "from pipeline.stages.embed import EmbedStage\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.split() == ["False", "False"]


@pytest.mark.parametrize(
    "gpus,n_models,num_actors",
    [(1, 2, None), (1, 1, None), (2, 2, None), (3, 2, 2), (1, 2, 3), (1, 1, 7), (2, 1, 13)],
)
def test_every_inference_actor_fits_on_the_gpus_at_once(gpus, n_models, num_actors) -> None:
    """Ray places fractional GPUs one GPU at a time: the actors of all models, each asking
    for its share, must fit the GPUs as bins, or a pool never starts and the job waits."""
    from pipeline.config import Scheduling

    n, resources, _ = sizing.actor_args(Scheduling(num_actors=num_actors), n_models, {"GPU": gpus})
    share = resources["num_gpus"]
    assert 0 < share <= 1
    per_gpu = int(1 / share + 1e-9)  # actors one GPU holds
    assert per_gpu * gpus >= n * n_models
    if n * n_models <= gpus:
        assert share == 1  # enough GPUs: each actor has one to itself


def test_an_asked_gpu_fraction_is_kept() -> None:
    from pipeline.config import Scheduling

    sched = Scheduling(gpus_per_actor=0.25)
    assert sizing.actor_args(sched, 2, {"GPU": 1})[1]["num_gpus"] == 0.25


def test_each_model_is_declared_with_the_settings_the_config_gives_it() -> None:
    from pipeline.config import AnnotateConfig, EmbedSettings, ModelSpec, NerSettings
    from pipeline.execution.declarations import encoder_stages
    from pipeline.models.loading import ModelInfo
    from pipeline.stages.embed import EmbedStage
    from pipeline.stages.ner import NerStage
    from pipeline.types import RunPlan

    infos = {
        "ner": ModelInfo("n", "/models/ner", "bert", 256, "w", None),
        "embed": ModelInfo("e", "/models/embed", "bert", 512, "w", None, pooling="cls", dim=8),
    }
    cfg = AnnotateConfig(
        "in", "out", ModelSpec("n", "ner", trust_remote_code=True), ModelSpec("e", "embed"),
        aggregation="max", decoding="greedy", normalize=False, dtype="bfloat16",
        allow_pickle=True,
    )  # fmt: skip
    rp = RunPlan(infos, {"ner": 64, "embed": 100}, [], [], [])
    ner, embed = encoder_stages(rp, cfg)
    assert (ner.role, ner.stage, embed.role, embed.stage) == ("ner", NerStage, "embed", EmbedStage)
    assert ner.settings == NerSettings(
        "/models/ner", 256, 64, "bfloat16", trust_remote_code=True, allow_pickle=True,
        aggregation="max", decoding="greedy",
    )  # fmt: skip
    assert embed.settings == EmbedSettings(
        "/models/embed", 512, 100, "bfloat16", allow_pickle=True, pooling="cls", normalize=False
    )
    only_embed = RunPlan({"embed": infos["embed"]}, {"embed": 100}, [], [], [])
    assert [d.role for d in encoder_stages(only_embed, cfg)] == ["embed"]
