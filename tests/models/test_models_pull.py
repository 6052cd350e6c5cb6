"""``python -m jobs.models pull``: a model copied once, pinned, to a folder or SeaweedFS."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import tiny_models as tm
from support.family_models import write_sentence_transformers
from support.job_helpers import ROOT

from pipeline.config import ModelSpec
from pipeline.execution.plan import resolve_model
from pipeline.models import loading as models
from pipeline.models.pull import PullRefused, pull_model
from pipeline.storage import files as storage

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def pull(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jobs.models", "pull", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """A sentence-transformers model laid out as a hub cache snapshot (its folder named by
    the commit, a hidden cache folder beside the files), and another model."""
    root = tmp_path_factory.mktemp("pull-src")
    snap = root / "models--org--tiny-st" / "snapshots" / COMMIT
    write_sentence_transformers(snap, "cls", seed=1)
    (snap / ".cache").mkdir()
    (snap / ".cache" / "lock.bin").write_bytes(b"not part of the model")
    other = tm.write_random_encoder(root / "other", seed=2)
    return {"st": snap, "other": other}


def tree(path: Path) -> dict[str, bytes]:
    return {
        p.relative_to(path).as_posix(): p.read_bytes()
        for p in path.rglob("*")
        if p.is_file() and not p.relative_to(path).as_posix().startswith(".")
    }


def test_pull_to_a_folder_once_then_unchanged_then_refused(sources, tmp_path):
    dest = tmp_path / "pinned"
    first = pull(str(sources["st"]), str(dest))
    assert first.returncode == 0, first.stderr
    assert "copied" in first.stdout
    copied = tree(dest)
    prov = json.loads(copied.pop("_provenance.json"))
    assert copied == tree(sources["st"])  # every file, sub-folders included, none hidden
    assert "1_Pooling/config.json" in copied and ".cache/lock.bin" not in copied
    assert prov["revision"] == COMMIT and prov["source"] == str(sources["st"])
    assert prov["weights_sha256"] == models.weights_hash(sources["st"])
    weights = sources["st"] / "model.safetensors"
    assert prov["files"]["model.safetensors"] == {
        "bytes": weights.stat().st_size,
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
    }

    stamp = (dest / "_provenance.json").stat().st_mtime_ns
    again = pull(str(sources["st"]), str(dest))
    assert again.returncode == 0 and "unchanged" in again.stdout
    assert (dest / "_provenance.json").stat().st_mtime_ns == stamp

    other = pull(str(sources["other"]), str(dest))
    assert other.returncode == 2 and "holds another model" in other.stderr
    assert json.loads((dest / "_provenance.json").read_text()) == prov
    forced = pull(str(sources["other"]), str(dest), "--force")
    assert forced.returncode == 0, forced.stderr
    assert not (dest / "1_Pooling").exists()  # the old model's files are gone
    assert models.weights_hash(dest) == models.weights_hash(sources["other"])


def test_pull_refuses_foreign_files_and_revisions_of_folders(sources, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("x")
    res = pull(str(sources["other"]), str(tmp_path / "busy"))
    assert res.returncode == 2 and "no _provenance.json" in res.stderr
    res = pull(str(sources["other"]), str(tmp_path / "d"), "--revision", "main")
    assert res.returncode == 2 and "hub ids only" in res.stderr
    res = pull(str(tmp_path / "missing"), str(tmp_path / "d"))
    assert res.returncode == 2 and "not found" in res.stderr
    res = pull("org/no-such-model", str(tmp_path / "d"), env={"HF_HUB_OFFLINE": "1"})
    assert res.returncode == 2 and "could not download org/no-such-model" in res.stderr
    assert not (tmp_path / "d").exists()


@pytest.mark.slow
def test_pull_to_seaweedfs_then_actors_load_the_pinned_copy(sources, s3_env, tmp_path, monkeypatch):
    monkeypatch.setenv("BIOMED_ANNOTATE_CACHE", str(tmp_path / "cache"))
    dest = storage.join(s3_env, "models", "tiny-st")
    assert pull_model(str(sources["st"]), dest).action == "copied"
    assert pull_model(str(sources["st"]), dest).action == "unchanged"

    local = models.resolve_model_dir(dest)
    assert tree(local) == {
        **tree(sources["st"]),
        "_provenance.json": tree(local)["_provenance.json"],
    }
    assert models.weights_hash(local) == models.weights_hash(sources["st"])
    info = resolve_model(ModelSpec(dest, "embed"))
    assert info.revision == COMMIT
    assert info.weights_sha256 == models.weights_hash(sources["st"])
    assert info.pooling == "cls"  # the folder's declaration travelled with it

    # an s3 copy pulled on to a folder keeps the hub revision
    onward = tmp_path / "onward"
    assert pull_model(dest, str(onward)).provenance["revision"] == COMMIT

    with pytest.raises(PullRefused):
        pull_model(str(sources["other"]), dest)
    pull_model(str(sources["other"]), dest, force=True)
    # nodes' caches are keyed by the provenance: the replaced model is fetched anew
    replaced = models.resolve_model_dir(dest)
    assert replaced != local
    assert models.weights_hash(replaced) == models.weights_hash(sources["other"])
    assert resolve_model(ModelSpec(dest, "embed")).revision is None
