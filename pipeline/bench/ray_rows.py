"""The benchmark's Ray rows: ``python -m jobs.annotate`` as users run it, on a fresh local
Ray, watched from outside (memory and CPU of every process it starts), and the scale
runs on generated corpora with a tiny model.

Ray Data's per-operator timings cannot be read from another process through its API;
the job's Ray session writes them to ``logs/ray-data/ray-data.log`` (one "Operator …
completed. Operator Metrics" record per operator), and that file is what is parsed here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline import schemas as S
from pipeline.bench.harness import BenchSettings, Clock, Corpus, Entity, _vm_hwm_bytes, row
from pipeline.storage import files as storage

ROOT = Path(__file__).resolve().parents[2]
MIB = 2**20
# Operator metrics read from the ray-data log: UDF seconds summed over its tasks, and
# the largest unique memory (USS) Ray measured in one of its workers.
_OP_RECORD = re.compile(r"Operator \w+\[(?P<op>.+?)\] completed\. Operator Metrics:\n(?P<m>\{.*\})")
_NUMBER = r"'{}': ([0-9.eE+-]+)"
_MAX_USS = re.compile(r"'max_uss_bytes': \{[^}]*'max': (\d+)")


class TreeMonitor(threading.Thread):
    """Samples a process and all its descendants: peak resident memory (VmHWM, so no
    spike is missed while a process lives), CPU seconds, and each process's role."""

    def __init__(self, pid: int, interval_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        import psutil

        self.root = psutil.Process(pid)
        self.interval_s = interval_s
        self.procs: dict[int, Any] = {pid: self.root}
        self.peak: dict[int, int] = {}  # bytes
        self.cpu: dict[int, float] = {}  # seconds
        self.titles: dict[int, str] = {}
        self.tree_peak = 0  # bytes, all processes at one instant
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.sample()
            self._done.wait(self.interval_s)

    def stop(self) -> None:
        self._done.set()
        self.join()

    def sample(self) -> None:
        import psutil

        try:
            for child in self.root.children(recursive=True):
                self.procs.setdefault(child.pid, child)
        except psutil.Error:
            pass
        now = 0
        for pid, p in self.procs.items():
            try:
                rss = p.memory_info().rss
                cpu = p.cpu_times()
                title = _role(p.cmdline())
            except psutil.Error:
                continue
            now += rss
            self.peak[pid] = max(self.peak.get(pid, 0), _vm_hwm_bytes(pid) or rss)
            self.cpu[pid] = cpu.user + cpu.system
            if title and not title.startswith("ray::IDLE"):
                self.titles[pid] = title
        self.tree_peak = max(self.tree_peak, now)

    def summary(self) -> dict[str, Any]:
        workers: dict[str, float] = {}
        system = 0.0
        for pid, peak in self.peak.items():
            name = self.titles.get(pid, "ray::IDLE")
            if pid == self.root.pid:
                continue
            if name.startswith("ray::"):
                workers[name] = max(workers.get(name, 0.0), peak / MIB)
            else:
                system += peak / MIB
        return {
            "driver_peak_mib": round(self.peak.get(self.root.pid, 0) / MIB, 1),
            "worker_peak_mib": round(max(workers.values(), default=0.0), 1),
            "workers_peak_mib": {k: round(v, 1) for k, v in sorted(workers.items())},
            "ray_system_peak_mib": round(system, 1),
            "tree_peak_mib": round(self.tree_peak / MIB, 1),
            "cpu_s": round(sum(self.cpu.values()), 2),
            "cpu_s_by_role": self.cpu_by_role(),
        }

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds per process role (the driver, each Ray worker's task or actor,
        each Ray system process), largest first: where a run's CPU went."""
        roles: dict[str, float] = {}
        for pid, cpu in self.cpu.items():
            name = "driver" if pid == self.root.pid else self.titles.get(pid, "ray::IDLE")
            roles[name] = roles.get(name, 0.0) + cpu
        return {k: round(v, 2) for k, v in sorted(roles.items(), key=lambda kv: -kv[1])}

    def end_leftovers(self, grace_s: float = 15.0) -> list[str]:
        """Give the job's processes ``grace_s`` to exit after the driver has (Ray's own
        shutdown is asynchronous), then terminate, by pid, any still running. Returns
        the titles of those terminated (none is expected)."""
        import psutil

        alive = [p for p in self.procs.values() if _running(p)]
        _, alive = psutil.wait_procs(alive, timeout=grace_s)
        ended = []
        for p in alive:
            try:
                p.terminate()
                ended.append(self.titles.get(p.pid, str(p.pid)))
            except psutil.Error:
                pass
        return ended


def _role(cmdline: list[str]) -> str:
    """A process's role from its command line: Ray workers name themselves ``ray::…``;
    system processes are a binary (``raylet``) or a Python script (``dashboard.py``)."""
    if not cmdline:
        return ""
    if cmdline[0].startswith("ray::"):
        return cmdline[0]
    script = next((a for a in cmdline[1:4] if a.endswith(".py")), None)
    return Path(script or cmdline[0].split()[0]).name


def _running(p: Any) -> bool:
    try:
        return p.is_running()
    except Exception:
        return False


def run_annotate(
    args: list[str], workdir: Path, timeout_s: float = 3600, attempts: int = 3
) -> dict[str, Any]:
    """Run ``python -m jobs.annotate ARGS`` on a fresh local Ray whose session lives in a
    private temp folder; return its wall time, memory, CPU, run.json and per-operator
    metrics. Ray gives its raylet a fixed 30 s to register, which a loaded machine can
    miss: such a start-up failure is retried (``attempts`` in all) and counted."""
    for attempt in range(1, attempts + 1):
        res = _run_once(args, workdir, timeout_s)
        if res["returncode"] == 0:
            return {**res, "attempts": attempt}
        tail = (workdir / "annotate.log").read_text()[-3000:]
        if "timed out during startup" not in tail or attempt == attempts:
            raise RuntimeError(f"jobs.annotate exited with {res['returncode']}; log tail:\n{tail}")
    raise AssertionError("unreachable")


def _run_once(args: list[str], workdir: Path, timeout_s: float) -> dict[str, Any]:
    ray_tmp = Path(tempfile.mkdtemp(prefix="rb", dir="/tmp"))  # short: Ray's socket paths
    env = {**os.environ, "RAY_ADDRESS": "local", "RAY_TMPDIR": str(ray_tmp)}
    env["RAY_DEDUP_LOGS"] = "0"
    with open(workdir / "annotate.log", "w") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "jobs.annotate", *args],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        monitor = TreeMonitor(proc.pid)
        monitor.start()
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.terminate()
            rc = proc.wait()
        wall = time.perf_counter() - t0
        monitor.stop()
    leftovers = monitor.end_leftovers()
    operators = parse_ray_data_logs(ray_tmp)
    for i, path in enumerate(sorted(ray_tmp.rglob("ray-data.log"))):  # kept for reading
        shutil.copy(path, workdir / f"ray-data-{i}.log")
    shutil.rmtree(ray_tmp, ignore_errors=True)
    output = args[args.index("--output") + 1]
    return {
        "returncode": rc,
        "wall_s": wall,
        "memory": monitor.summary(),
        "run": storage.read_json(storage.join(output, S.RUN_JSON)) if rc == 0 else None,
        "operators": operators,
        "terminated_after_exit": leftovers,
    }


def parse_ray_data_logs(ray_tmp: Path) -> dict[str, dict[str, float]]:
    """Per Ray Data operator: UDF seconds (``function_body_time_s``), task seconds and the
    largest worker USS (MiB), from every ``ray-data.log`` of the sessions under ``ray_tmp``."""
    ops: dict[str, dict[str, float]] = {}
    for path in ray_tmp.rglob("ray-data.log"):
        for m in _OP_RECORD.finditer(path.read_text(errors="replace")):
            body = m.group("m")
            entry = ops.setdefault(m.group("op"), {})
            for key in ("function_body_time_s", "task_completion_time_s", "num_tasks_finished"):
                found = re.search(_NUMBER.format(key), body)
                if found:
                    entry[key] = entry.get(key, 0.0) + float(found.group(1))
            uss = _MAX_USS.search(body)
            if uss:
                entry["max_uss_mib"] = max(entry.get("max_uss_mib", 0.0), int(uss.group(1)) / MIB)
    return ops


def annotate_args(
    input_uri: str, output_uri: str, ner_dir: str, embed_dir: str, s: BenchSettings, dtype: str
) -> list[str]:
    return [
        *("--input", input_uri, "--output", output_uri, "--mode", "overwrite"),
        *("--ner-model", ner_dir, "--embed-model", embed_dir),
        *("--max-length", str(s.max_length), "--stride", str(s.stride), "--dtype", dtype),
        *(("--batch-tokens", str(s.batch_tokens)) if s.batch_tokens else ()),
        *(("--docs-per-batch", str(s.docs_per_batch)) if s.docs_per_batch else ()),
        *(("--compile",) if s.compile_model else ()),
        *("--decoding", s.decoding),
    ]


def write_input(corpus: Corpus, workdir: Path) -> str:
    """The corpus's documents as the job's input file; returns its path."""
    input_uri = str(workdir / "docs.parquet")
    storage.write_parquet_table(
        input_uri,
        corpus.docs.select([S.DOC_ID, S.TEXT_INTERNAL]).rename_columns(["doc_id", "text"]),
    )
    return input_uri


def ray_row(
    corpus: Corpus, ner_dir: str, embed_dir: str, s: BenchSettings, dtype: str, workdir: Path
) -> tuple[dict[str, Any], set[Entity], np.ndarray]:
    """The whole job (NER and embeddings, one process started from scratch, Ray start-up
    included) on the corpus's documents. Returns the row, its entities and its vectors."""
    from pipeline.bench.contenders import entity_set

    input_uri = write_input(corpus, workdir)
    output = str(workdir / "annotate-out")
    res = run_annotate(annotate_args(input_uri, output, ner_dir, embed_dir, s, dtype), workdir)
    mem = res["memory"]
    r = row(
        "jobs.annotate on local Ray (NER + embedding)",
        dtype,
        corpus,
        Clock(res["wall_s"], mem["cpu_s"]),
        None,
        peak_mib=mem["tree_peak_mib"],
        job_wall_s=res["run"]["this_run"]["wall_s"],
        memory=mem,
        operators=res["operators"],
        terminated_after_exit=res["terminated_after_exit"],
        attempts=res["attempts"],
    )
    entities = entity_set(storage.read_parquet_table(storage.join(output, S.ENTITIES_DIR)))
    emb = storage.read_parquet_table(storage.join(output, S.EMBEDDINGS_DIR))
    order = np.lexsort(
        (emb.column(S.CHUNK_INDEX).to_numpy(), np.asarray(emb.column(S.DOC_ID).to_pylist(), int))
    )
    vectors = np.asarray(emb.column(S.EMBEDDING).to_pylist(), np.float32)[order]
    return r, entities, vectors


def synthetic_documents(n_docs: int, tokenizer_dir: str, seed: int = 0) -> pa.Table:
    """``n_docs`` short documents (20 to 80 words drawn from the tokenizer's whole-word
    vocabulary), ids ``g0000000``…; deterministic for a seed."""
    from transformers import AutoTokenizer

    vocab = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True).get_vocab()
    words = sorted(w for w in vocab if w.isascii() and w.isalpha() and len(w) > 2)
    rng = np.random.default_rng(seed)
    lengths = rng.integers(20, 81, n_docs)
    picks = rng.integers(0, len(words), int(lengths.sum()), dtype=np.int32)
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    texts = [
        " ".join(map(words.__getitem__, picks[a:b].tolist())) + "."
        for a, b in zip(bounds[:-1], bounds[1:])
    ]
    ids = [f"g{i:07d}" for i in range(n_docs)]
    return pa.table({"doc_id": ids, "text": texts})


def scale_runs(
    sizes: list[int], tokenizer_dir: str, s: BenchSettings, workdir: Path, shard_docs: int = 20000
) -> list[dict[str, Any]]:
    """The full job on generated corpora of each size, with a tiny random BERT for both
    models so that the framework, not the model, sets the pace."""
    from pipeline.bench.harness import build_ner_model, build_random_bert

    encoder = build_random_bert(tokenizer_dir, workdir / "tiny-encoder", "tiny")
    ner = build_ner_model(encoder, workdir / "tiny-ner")
    results = []
    for n in sizes:
        base = workdir / f"scale-{n}"
        docs = synthetic_documents(n, tokenizer_dir, seed=n)
        for k, i in enumerate(range(0, n, shard_docs)):
            storage.write_parquet_table(
                str(base / "in" / f"part-{k:05d}.parquet"), docs.slice(i, shard_docs)
            )
        del docs
        out = str(base / "out")
        res = run_annotate(annotate_args(str(base / "in"), out, ner, encoder, s, "float32"), base)
        this = res["run"]["this_run"]
        udf = {op: m.get("function_body_time_s", 0.0) for op, m in res["operators"].items()}
        total = sum(udf.values()) or 1.0
        results.append(
            {
                "docs": n,
                "tokens": this["tokens"],
                "wall_s": round(res["wall_s"], 2),
                "job_wall_s": this["wall_s"],
                "docs_per_s": round(n / res["wall_s"], 1),
                "job_docs_per_s": this["docs_per_s"],
                **res["memory"],
                "operator_udf_s": {op: round(v, 2) for op, v in udf.items()},
                "operator_share": {op: round(v / total, 3) for op, v in udf.items()},
                "operator_max_uss_mib": {
                    op: round(m.get("max_uss_mib", 0.0), 1) for op, m in res["operators"].items()
                },
            }
        )
        shutil.rmtree(base / "in", ignore_errors=True)
        shutil.rmtree(base / "out", ignore_errors=True)
    return results
