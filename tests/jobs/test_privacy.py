"""Privacy and safety: no document text in any log, exception message or JSON the job
writes (Ray's own session logs included), credentials nowhere, and pickle-only
checkpoints refused unless the user allows them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from support import tiny_models as tm
from support.documents import unchecked_strings, wtf8
from support.job_helpers import read_run, run_in_session, tail
from transformers import BertModel

from pipeline.storage import files as storage

pytestmark = pytest.mark.slow

# In every document text; nowhere else.
MARKER = "zq" + uuid.uuid4().hex


def write_pickle_encoder(dest: Path) -> Path:
    """The tiny encoder with its weights as a pickle (``pytorch_model.bin``) only.

    transformers 5 always saves safetensors, so the pickle is written with torch.save.
    """
    src = tm.write_random_encoder(dest.with_name(dest.name + "-st"))
    shutil.copytree(src, dest)
    (dest / "model.safetensors").unlink()
    torch.save(BertModel.from_pretrained(str(src)).state_dict(), dest / "pytorch_model.bin")
    return dest


def files_containing(root: Path, needles: list[str]) -> list[str]:
    """Paths of the files under ``root`` whose bytes contain any of ``needles``."""
    raw = [n.encode() for n in needles]
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if any(n in data for n in raw):
                hits.append(str(path))
    return hits


def private_corpus() -> dict[str, pa.Table]:
    """Texts that all hold MARKER, including documents that end as errors."""
    words = "aspirin was given for asthma and the patient denies sepsis"
    texts = [f"{words} {MARKER} {i}" for i in range(6)]
    texts.append(f"{MARKER} " * 40)  # over --max-chars 200: status error
    raw = [t.encode() for t in texts]
    raw.append(wtf8(f"{MARKER} \ud800"))  # invalid UTF-8: status error
    raw.append(f"heparin {MARKER}".encode())  # a repeated id: status error
    raw.append(f"insulin {MARKER}".encode())  # a null id: status error
    ids = [f"p{i}" for i in range(len(texts) + 1)] + ["p0", None]
    good = pa.table({"doc_id": ids, "text": unchecked_strings(raw)})
    number = pa.table({"doc_id": ["n0"], "text": pa.array([7], pa.int64())})
    return {"p-good": good, "p-number": number}


def test_no_text_or_secret_in_any_log_or_json_and_allow_pickle_loads(
    s3_env, tmp_path, tmp_path_factory
):
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    for name, table in private_corpus().items():
        storage.write_parquet_table(storage.join(s3_env, "in", f"{name}.parquet"), table)
    # A shard that cannot be read: its error message must not quote its bytes either.
    broken = tmp_path / "broken.parquet"
    pq.write_table(pa.table({"doc_id": ["b0"], "text": [f"fever {MARKER}"]}), broken)
    fs, path = storage.filesystem(storage.join(s3_env, "in", "p-broken.parquet"))
    fs.pipe_file(path, broken.read_bytes()[:-20])
    pickle_model = write_pickle_encoder(tmp_path_factory.mktemp("models") / "pickle")
    oracle = tm.write_oracle_ner(tmp_path / "oracle")
    out = storage.join(s3_env, "out")
    # Ray's session logs (every worker's stdout and stderr, raylet, GCS) land here.
    ray_tmp = Path(tempfile.mkdtemp(prefix="rp", dir="/tmp"))  # short: socket paths
    logs = tmp_path / "logs"
    args = [
        "--input", storage.join(s3_env, "in"), "--output", out,
        "--ner-model", str(oracle), "--embed-model", str(pickle_model), "--allow-pickle",
        "--max-chars", "200", "--max-length", "24", "--stride", "6",
    ]  # fmt: skip
    rc = run_in_session(args, logs, env={"RAY_TMPDIR": str(ray_tmp)})
    try:
        assert rc == 1, tail(logs)  # the broken shard fails; the rest is committed
        run = read_run(out)
        assert run["shards"]["done"] == 2 and list(run["failed_shards"]) == [
            storage.join(s3_env, "in", "p-broken.parquet")
        ]
        statuses = run["documents_by_status"]
        assert statuses == {"ok": 6, "error": 5}, statuses
        assert run["rows"]["embeddings"] > 0  # --allow-pickle loaded the pickle checkpoint
        assert any(ray_tmp.rglob("*.log")) or any(ray_tmp.rglob("*.err"))  # logs were there

        assert not files_containing(ray_tmp, [MARKER, secret])
        assert not files_containing(logs, [MARKER, secret])
        for uri in storage.list_files(out):
            fs, path = storage.filesystem(uri)
            if uri.endswith(".parquet"):
                # The tables hold the text (entities.text) by design, never credentials.
                assert secret not in str(storage.read_parquet_table(uri).to_pylist()), uri
            else:
                data = fs.cat_file(path)
                assert MARKER.encode() not in data and secret.encode() not in data, uri
        # the marker did reach the tables: the search above was looking for the right thing
        ents = storage.read_parquet_table(storage.join(out, "entities")).num_rows
        assert ents > 0
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_a_pickle_only_checkpoint_is_refused_before_any_work(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    pq.write_table(pa.table({"doc_id": ["a"], "text": ["asthma"]}), inp / "p.parquet")
    model = write_pickle_encoder(tmp_path / "pickle")
    logs = tmp_path / "logs"
    args = ["--input", str(inp), "--output", str(tmp_path / "out"), "--embed-model", str(model)]
    rc = run_in_session(args, logs, timeout_s=120)  # a refusal takes seconds, not minutes
    stderr = (logs / "stderr").read_text(errors="replace")
    assert rc == 2, stderr[-3000:]
    assert "--allow-pickle" in stderr and str(model) in stderr
    assert "Started a local Ray instance" not in stderr


def test_credentials_in_uris_are_redacted_in_values_keys_and_lists():
    """run.json holds the config, the models' sources, the shard URIs and the failed
    shards (URIs as keys); fsspec accepts ``s3://key:secret@bucket`` in any of them."""
    import json

    from pipeline.execution.report import redact_uri, redacted

    run = {
        "config": {"input_uri": "s3://AKIAUSER:s3cretKEY@bucket/in", "output_uri": "/out"},
        "models": {"ner": {"source": "s3://u:pw1@bucket/model", "dim": 384}},
        "input_shards": ["s3://u:pw2@bucket/in/a.parquet", "/local/b.parquet"],
        "failed_shards": {"gs://u:pw3@bucket/in/c.parquet": "OSError: gone"},
    }
    text = json.dumps(redacted(run))
    for secret in ("AKIAUSER", "s3cretKEY", "pw1", "pw2", "pw3"):
        assert secret not in text
    assert "s3://***@bucket/in" in text and "/local/b.parquet" in text
    assert '"dim": 384' in text  # other values untouched
    assert redact_uri("error: no Parquet files under s3://a:b@bucket/x") == (
        "error: no Parquet files under s3://***@bucket/x"
    )
