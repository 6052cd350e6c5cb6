"""Checks of the deployment configs: Ray cluster launcher (AWS) and KubeRay RayJob.

The cluster launcher config goes through Ray's own ``prepare_config`` and
``validate_config``. For ``provider.type: aws`` these only read the defaults
file shipped with Ray and apply its JSON schema; the calls that reach AWS
(instance-type lookup, IAM, security groups, subnets) happen later, in
``ray up``'s bootstrap step, which this test never calls. The test hides boto3
while validating, so any attempt to use an AWS client would fail loudly.
"""

from __future__ import annotations

import copy
import re
import shlex
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_YAML = ROOT / "cluster.yaml"
RAYJOB_YAML = ROOT / "deploy" / "kuberay-rayjob.yaml"

# The flags and choices of `python -m jobs.annotate`, from the job's CLI contract.
# Replace with the parser's own options once jobs/annotate.py exists.
# AWS spec sheet (vCPUs, NVIDIA GPUs) for the instance types we expect to use.
EC2_SPECS = {"g5.xlarge": (4, 1), "g6.xlarge": (4, 1)}

SECRET_PATTERNS = (
    re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    re.compile(r"secret_access_key|access_key_id|session_token", re.IGNORECASE),
)


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pinned(name: str) -> Requirement:
    for dep in _pyproject()["project"]["dependencies"]:
        req = Requirement(dep)
        if req.name == name:
            return req
    raise AssertionError(f"{name} is not a dependency in pyproject.toml")


def _ray_pin() -> str:
    """The Ray version the suite ran with (constraints.txt), inside pyproject's bound: the
    image's Ray must be exactly the one the job is installed with."""
    pins = [
        line.split("==", 1)[1].strip()
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line.startswith("ray==")
    ]
    assert len(pins) == 1, "constraints.txt must pin ray exactly once"
    assert Version(pins[0]) in _pinned("ray").specifier
    return pins[0]


def _assert_no_secrets(text: str) -> None:
    for pattern in SECRET_PATTERNS:
        assert not pattern.search(text), f"credential-like text matches {pattern.pattern}"


# --- Ray cluster launcher -------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture(scope="module")
def prepared(cluster: dict[str, Any]) -> dict[str, Any]:
    from ray.autoscaler._private.util import prepare_config, validate_config

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "boto3", None)  # import boto3 now raises ImportError
        mp.setitem(sys.modules, "botocore", None)
        config = prepare_config(copy.deepcopy(cluster))
        validate_config(config)
    return config


def _workers(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    head = config["head_node_type"]
    return {k: v for k, v in config["available_node_types"].items() if k != head}


def test_cluster_passes_ray_validator(prepared: dict[str, Any]) -> None:
    assert prepared["provider"]["type"] == "aws"
    assert prepared["provider"]["region"]


def test_head_schedules_no_work(prepared: dict[str, Any]) -> None:
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert head["resources"].get("CPU") == 0, "head must advertise 0 CPUs"
    assert head["resources"].get("GPU", 0) == 0
    assert head["max_workers"] == 0
    instance = head["node_config"]["InstanceType"]
    assert not re.match(r"(g|p)\d", instance), f"{instance} is a GPU instance"


def test_gpu_workers_scale_from_zero_on_spot(prepared: dict[str, Any]) -> None:
    workers = _workers(prepared)
    assert {w["node_config"]["InstanceType"] for w in workers.values()} >= {
        "g5.xlarge",
        "g6.xlarge",
    }
    for name, worker in workers.items():
        instance = worker["node_config"]["InstanceType"]
        assert worker["resources"].get("GPU", 0) >= 1, name
        if instance in EC2_SPECS:  # declared resources must match the hardware
            cpus, gpus = EC2_SPECS[instance]
            assert (worker["resources"]["CPU"], worker["resources"]["GPU"]) == (cpus, gpus)
        assert worker["min_workers"] == 0, name
        assert 1 <= worker["max_workers"] <= prepared["max_workers"], name
        market = worker["node_config"].get("InstanceMarketOptions", {})
        assert market.get("MarketType") == "spot", name


def test_idle_timeout_set(prepared: dict[str, Any]) -> None:
    assert prepared["idle_timeout_minutes"] > 0


def test_every_node_has_an_instance_profile(prepared: dict[str, Any]) -> None:
    for name, node_type in prepared["available_node_types"].items():
        profile = node_type["node_config"].get("IamInstanceProfile", {})
        assert profile.get("Name") or profile.get("Arn"), name
    assert "aws_credentials" not in prepared["provider"]


def test_cluster_yaml_has_no_credentials() -> None:
    _assert_no_secrets(CLUSTER_YAML.read_text())


def test_only_ssh_is_opened_and_dashboard_is_local(prepared: dict[str, Any]) -> None:
    rules = prepared["provider"].get("security_group", {}).get("IpPermissions", [])
    for rule in rules:
        assert (rule.get("FromPort"), rule.get("ToPort")) == (22, 22), rule
    # `ray start` binds the dashboard to localhost unless told otherwise.
    start = " ".join(prepared["head_start_ray_commands"])
    hosts = re.findall(r"--dashboard-host[= ]+(\S+)", start)
    assert all(h in ("127.0.0.1", "localhost") for h in hosts), hosts


def test_image_matches_project_pins(prepared: dict[str, Any]) -> None:
    image = prepared["docker"]["image"]
    assert image.startswith(f"rayproject/ray:{_ray_pin()}-"), image
    allowed = SpecifierSet(_pyproject()["project"]["requires-python"])
    tags = {f"-py3{minor}-" for minor in range(9, 15) if Version(f"3.{minor}") in allowed}
    assert any(tag in image for tag in tags), f"{image} is not built for Python {allowed}"
    assert image.endswith("-gpu") or re.search(r"-cu\d+$", image), "needs a CUDA image"


def test_setup_installs_project_and_cuda_torch_on_every_node(
    prepared: dict[str, Any],
) -> None:
    mounts = prepared["file_mounts"]
    project_dirs = [
        remote for remote, local in mounts.items() if (ROOT / local).resolve() == ROOT.resolve()
    ]
    assert project_dirs, "the repository root must be a file mount"
    torch_bound = _pinned("torch").specifier
    effective = {"head": prepared["head_setup_commands"]}
    for name, worker in _workers(prepared).items():
        # A node type's own worker_setup_commands replace the merged global list.
        effective[name] = worker.get("worker_setup_commands", prepared["worker_setup_commands"])
    for node, commands in effective.items():
        script = "\n".join(commands)
        project = rf"pip install[^\n]*\s{re.escape(project_dirs[0])}/?(\s|$)"
        assert re.search(project, script, re.MULTILINE), f"{node}: project not installed"
        constrained = rf"-c {re.escape(project_dirs[0])}/constraints.txt"
        assert re.search(constrained, script), (
            f"{node}: the project must be installed with its tested constraints"
        )
        torch = re.search(
            r'pip install[^\n]*"?torch==([\w.]+)"?[^\n]*--index-url \S+/cu\d+', script
        )
        assert torch, f"{node}: no CUDA torch wheel"
        assert Version(torch.group(1)) in torch_bound, f"{node}: torch outside {torch_bound}"
        assert script.index(torch.group(0)) < script.index(project_dirs[0]), (
            f"{node}: CUDA torch must be installed before the project"
        )


# --- KubeRay RayJob -------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(RAYJOB_YAML.read_text()) if doc]


@pytest.fixture(scope="module")
def rayjob(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    jobs = [d for d in manifests if d.get("kind") == "RayJob"]
    assert len(jobs) == 1
    return jobs[0]


def _containers(group: dict[str, Any]) -> list[dict[str, Any]]:
    return group["template"]["spec"]["containers"]


def test_rayjob_required_fields(rayjob: dict[str, Any]) -> None:
    assert rayjob["apiVersion"] == "ray.io/v1"
    assert rayjob["metadata"]["name"]
    spec = rayjob["spec"]
    assert spec["entrypoint"].strip()
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] > 0
    assert spec["submissionMode"] in ("K8sJobMode", "HTTPMode")
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == _ray_pin()
    assert cluster["headGroupSpec"] and cluster["workerGroupSpecs"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:  # rayStartParams is map[string]string in the CRD
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())
    images = {c["image"] for g in groups for c in _containers(g)}
    assert len(images) == 1, "head and workers must run the same image"
    assert _ray_pin() in images.pop()


def test_rayjob_head_takes_no_work_and_is_not_exposed(rayjob: dict[str, Any]) -> None:
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]
    assert head["rayStartParams"].get("num-cpus") == "0"
    for container in _containers(head):
        for part in ("requests", "limits"):
            assert "nvidia.com/gpu" not in container.get("resources", {}).get(part, {})
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    assert not head.get("enableIngress", False)


def test_rayjob_gpu_workers_autoscale_from_zero(rayjob: dict[str, Any]) -> None:
    cluster = rayjob["spec"]["rayClusterSpec"]
    assert cluster.get("enableInTreeAutoscaling") is True, "min 0 needs the autoscaler"
    for group in cluster["workerGroupSpecs"]:
        assert group["minReplicas"] == 0
        assert group["maxReplicas"] >= 1
        assert group.get("replicas", 0) <= group["maxReplicas"]
        gpus = [int(c["resources"]["limits"]["nvidia.com/gpu"]) for c in _containers(group)]
        assert sum(gpus) >= 1, group["groupName"]


def test_rayjob_uses_service_account_not_credentials(manifests: list[dict[str, Any]]) -> None:
    _assert_no_secrets(RAYJOB_YAML.read_text())
    accounts = {d["metadata"]["name"] for d in manifests if d.get("kind") == "ServiceAccount"}
    (rayjob,) = (d for d in manifests if d.get("kind") == "RayJob")
    cluster = rayjob["spec"]["rayClusterSpec"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        assert group["template"]["spec"].get("serviceAccountName") in accounts
        for container in _containers(group):
            names = {e["name"] for e in container.get("env", [])}
            assert not {n for n in names if n.startswith("AWS_") and "KEY" in n}


def _entrypoint_args(rayjob: dict[str, Any]) -> list[str]:
    argv = shlex.split(rayjob["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "jobs.annotate"], argv[:3]
    return argv[3:]


def test_entrypoint_flags_follow_the_job_contract(rayjob: dict[str, Any]) -> None:
    """The manifest's entrypoint parses with the job's own argument parser."""
    from jobs.annotate import build_parser

    args = build_parser().parse_args(_entrypoint_args(rayjob))  # exits on unknown flags
    assert args.input and args.output
    for name in ("max_length", "stride", "batch_tokens", "num_actors"):
        value = getattr(args, name)
        assert value is None or value >= 0, name
    if args.num_actors:  # one GPU per actor: more would wait forever
        max_gpus = sum(
            g["maxReplicas"]
            * sum(int(c["resources"]["limits"]["nvidia.com/gpu"]) for c in _containers(g))
            for g in rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]
        )
        assert args.num_actors <= max_gpus
