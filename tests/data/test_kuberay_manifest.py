"""deploy/gke/ray/rayjob-data.yaml, statically: the pod templates and the volume claim against
the Kubernetes schemas, the RayJob's fields against KubeRay's ray.io/v1 API, the image against
deploy/Dockerfile.ray, and every command of the entrypoint parsed by the real opengemma CLI."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import kubernetes_validate
import pytest
import typer
import yaml

from opengemma.cli import VERBS

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S_VERSION = "1.33.0"
IMAGE = "us-docker.pkg.dev/PROJECT/opengemma/opengemma"  # as deploy/gke/deployment-cpu.yaml
# fields of KubeRay's ray.io/v1 types (https://ray-project.github.io/kuberay/reference/api/)
RAYJOB_SPEC = {"entrypoint", "metadata", "runtimeEnvYAML", "jobId", "shutdownAfterJobFinishes",
               "ttlSecondsAfterFinished", "activeDeadlineSeconds", "rayClusterSpec",
               "clusterSelector", "submissionMode", "submitterPodTemplate", "submitterConfig",
               "entrypointResources", "entrypointNumCpus", "entrypointNumGpus", "suspend",
               "managedBy", "backoffLimit", "deletionStrategy"}  # fmt: skip
CLUSTER_SPEC = {"headGroupSpec", "workerGroupSpecs", "rayVersion", "enableInTreeAutoscaling",
                "autoscalerOptions", "headServiceAnnotations", "suspend", "managedBy",
                "gcsFaultToleranceOptions", "authOptions"}  # fmt: skip
HEAD_SPEC = {"template", "headService", "enableIngress", "rayStartParams", "serviceType"}
WORKER_SPEC = {"groupName", "replicas", "minReplicas", "maxReplicas", "idleTimeoutSeconds",
               "rayStartParams", "template", "scaleStrategy", "numOfHosts", "suspend"}  # fmt: skip


def _docs() -> dict[str, dict]:
    text = (DEPLOY / "gke" / "ray" / "rayjob-data.yaml").read_text()
    docs = [d for d in yaml.safe_load_all(text) if d]
    return {d["kind"]: d for d in docs}


def _templates(job: dict) -> list[dict]:
    cluster = job["spec"]["rayClusterSpec"]
    return [cluster["headGroupSpec"]["template"]] + [
        g["template"] for g in cluster["workerGroupSpecs"]
    ]


def check_command(argv: list[str]) -> None:
    """Parse one `opengemma VERB [SUB] ...` command line with the verb's own click command:
    an unknown option, a bad value or a missing required option raises."""
    assert argv[0] == "opengemma" and argv[1] in VERBS, argv
    module, attr, _ = VERBS[argv[1]]
    command = typer.main.get_command(getattr(importlib.import_module(module), attr))
    args = argv[2:]
    while getattr(command, "commands", None):  # a group: descend into the subcommand
        command, args = command.commands[args[0]], args[1:]
    command.make_context(" ".join(argv[:2]), list(args))


def _commands(entrypoint: str) -> list[list[str]]:
    return [shlex.split(part) for part in entrypoint.split("&&")]


def test_kinds_and_schemas():
    docs = _docs()
    assert set(docs) == {"RayJob", "PersistentVolumeClaim"}
    job = docs["RayJob"]
    assert job["apiVersion"] == "ray.io/v1"
    kubernetes_validate.validate(docs["PersistentVolumeClaim"], K8S_VERSION, strict=True)
    assert "ReadWriteMany" in docs["PersistentVolumeClaim"]["spec"]["accessModes"]
    for template in _templates(job):  # each group's pod template, as a core PodTemplate
        doc = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"},
               "template": template}  # fmt: skip
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_rayjob_fields_are_kuberay_fields():
    spec = _docs()["RayJob"]["spec"]
    assert set(spec) <= RAYJOB_SPEC, set(spec) - RAYJOB_SPEC
    cluster = spec["rayClusterSpec"]
    assert set(cluster) <= CLUSTER_SPEC and set(cluster["headGroupSpec"]) <= HEAD_SPEC
    assert spec["shutdownAfterJobFinishes"] is True
    groups = cluster["workerGroupSpecs"]
    assert groups and all(set(g) <= WORKER_SPEC for g in groups)
    for g in groups:
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
    for params in [cluster["headGroupSpec"]["rayStartParams"], *(g["rayStartParams"]
                                                                   for g in groups)]:  # fmt: skip
        assert all(isinstance(v, str) for v in params.values())  # KubeRay wants strings
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # tasks on workers


def test_images_and_ray_version_match_the_dockerfile():
    job = _docs()["RayJob"]
    text = (DEPLOY / "Dockerfile.ray").read_text()
    ray_version = re.search(r"^ARG RAY_VERSION=(\S+)$", text, re.M).group(1)
    assert job["spec"]["rayClusterSpec"]["rayVersion"] == ray_version
    assert re.search(r"^ARG BASE=opengemma:cpu$", text, re.M)  # built on deploy/Dockerfile
    assert '"opengemma[scrub,ray]"' in text and "ray[default" in text
    assert "-t opengemma:ray" in text
    for template in _templates(job):
        for c in template["spec"]["containers"]:
            assert c["image"] == f"{IMAGE}:ray", c["image"]


def test_every_pod_has_resources_and_the_shared_volumes():
    job = _docs()["RayJob"]
    for template in _templates(job):
        (c,) = template["spec"]["containers"]
        res = c["resources"]
        assert {"cpu", "memory"} <= set(res["requests"]) and {"cpu", "memory"} <= set(res["limits"])
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        assert {"/corpus", "/data", "/dev/shm"} <= set(mounts)
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        assert volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"] == "opengemma-data"
        assert volumes[mounts["/corpus"]]["csi"]["driver"] == "gcsfuse.csi.storage.gke.io"
        assert template["metadata"]["annotations"]["gke-gcsfuse/volumes"] == "true"


def test_entrypoint_runs_real_verbs_on_the_cluster():
    commands = _commands(_docs()["RayJob"]["spec"]["entrypoint"])
    assert [c[:3] for c in commands] == [["opengemma", "scrub", "/corpus/shards/*.jsonl"],
                                         ["opengemma", "batch", "generate"]]  # fmt: skip
    for argv in commands:
        check_command(argv)
        flags = dict(zip(argv, argv[1:], strict=False))
        assert flags["--engine"] == "ray" and flags["--address"] == "auto"
        assert "--resume" in argv  # a retried RayJob picks up where it stopped
        assert flags["--output"].startswith("/data/")  # the volume every pod shares


@pytest.mark.parametrize("argv", [
    ["opengemma", "scrub", "in.jsonl", "--output", "o", "--no-such-flag"],
    ["opengemma", "scrub", "in.jsonl", "--output", "o", "--workers", "many"],
    ["opengemma", "batch", "generate", "--input", "p.jsonl"],  # --output is required
    ["opengemma", "scrubb", "in.jsonl"],
])  # fmt: skip
def test_the_command_check_rejects_what_the_cli_would(argv):
    with pytest.raises(Exception) as info:
        check_command(argv)
    names = {cls.__name__ for cls in type(info.value).__mro__}
    # a click usage error (what `opengemma` would exit 2 on), or no such verb
    assert ("ClickException" in names and info.value.exit_code == 2) or "AssertionError" in names
