"""deploy/: manifests against the Kubernetes schemas, Dockerfiles and the entrypoint's logic."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S_VERSION = "1.33.0"


def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / "gke" / name).read_text()) if d]


def _entrypoint():
    spec = importlib.util.spec_from_file_location("og_entrypoint", DEPLOY / "entrypoint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["deployment-cpu.yaml", "deployment-gpu.yaml", "hpa.yaml"])
def test_manifests_validate_against_kubernetes_schemas(name):
    for doc in _docs(name):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_a_broken_manifest_is_rejected():
    doc = _docs("deployment-cpu.yaml")[0]
    doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSecond"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("name", ["deployment-cpu.yaml", "deployment-gpu.yaml"])
def test_deployments_drain_before_they_are_killed(name):
    deployment = _docs(name)[0]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + int(env["OPENGEMMA_DRAIN_TIMEOUT"])
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300  # model load budget
    port = container["ports"][0]["containerPort"]
    assert env["PORT"] == str(port)
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/dev/shm" in mounts and "/models" in mounts


def test_hpa_scales_on_a_metric_the_server_exports():
    """The HPA's metric is one a real server's /metrics serves, with the type the HPA names,
    as read by prometheus_client's own parser."""
    from fastapi.testclient import TestClient
    from prometheus_client.parser import text_string_to_metric_families

    from opengemma.server.app import build_state, create_app
    from opengemma.server.state import ServerConfig

    hpa = _docs("hpa.yaml")[0]
    metric = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    _, name, kind = metric.split("|")  # prometheus.googleapis.com|NAME|TYPE
    state = build_state(ServerConfig(max_batch=1, prefix_cache_bytes=0))
    try:
        with TestClient(create_app(state)) as client:
            scraped = client.get("/metrics")
    finally:
        state.engine.shutdown()
    assert scraped.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(scraped.text)}
    assert name in families, sorted(families)
    assert families[name].type == kind
    assert [s.value for s in families[name].samples] == [0.0]  # an idle server: none waiting
    deployment = _docs("deployment-cpu.yaml")[0]
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    monitor = _docs("podmonitoring.yaml")[0]
    assert (
        monitor["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    )
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_dockerfiles_copy_what_exists_and_run_the_entrypoint(name):
    text = (DEPLOY / name).read_text()
    root = DEPLOY.parent
    for src in re.findall(r"^COPY (?!--from=)(\S+(?: \S+)*) \S+$", text, re.M):
        for path in src.split():
            assert (root / path).exists(), path
    assert 'ENTRYPOINT ["python", "/opt/opengemma/entrypoint.py"]' in text
    assert "EXPOSE 8080" in text and '".[serve]"' in text and "USER 1000" in text


def test_entrypoint_builds_the_serve_command_from_the_environment():
    ep = _entrypoint()
    assert ep.build_command({}, None) == [
        "opengemma",
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
    ]
    env = {
        "AIP_HTTP_PORT": "7080",
        "PORT": "1",
        "OPENGEMMA_MAX_BATCH": "4",
        "OPENGEMMA_SERVE_ARGS": "--max-model-len 2048 --served-model-name 'my model'",
    }
    cmd = ep.build_command(env, "/models/m.gguf")
    assert cmd[4:8] == ["--port", "7080", "--model", "/models/m.gguf"]
    assert cmd[8:] == [
        "--max-batch",
        "4",
        "--max-model-len",
        "2048",
        "--served-model-name",
        "my model",
    ]
    with pytest.raises(ep.EntrypointError, match="port"):
        ep.build_command({"PORT": "http"}, None)


def test_entrypoint_flags_exist_on_the_serve_command():
    import typer.main

    from opengemma.server.cli import app

    params = {opt for p in typer.main.get_command(app).params for opt in p.opts}
    ep = _entrypoint()
    for flag in ["--host", "--port", "--model", *ep.OPTIONS.values()]:
        assert flag in params, flag


def test_entrypoint_resolves_models(tmp_path):
    ep = _entrypoint()
    calls = []

    def fake(spec, dest, env):
        calls.append((spec, dest))
        return dest / "pulled"

    fetchers = {"hf://": fake, "gs://": fake}
    env = {"OPENGEMMA_MODEL_DIR": str(tmp_path / "m")}
    assert ep.resolve_model(env, fetchers) is None  # the embedded model
    got = ep.resolve_model({**env, "OPENGEMMA_MODEL": "hf://google/gemma-3-1b-it"}, fetchers)
    assert got == str(tmp_path / "m" / "pulled") and (tmp_path / "m").is_dir()
    got = ep.resolve_model({**env, "AIP_STORAGE_URI": "gs://bucket/gemma"}, fetchers)
    assert calls[-1][0] == "gs://bucket/gemma" and got.endswith("pulled")
    local = tmp_path / "model.gguf"
    local.write_bytes(b"GGUF")
    assert ep.resolve_model({"OPENGEMMA_MODEL": str(local)}) == str(local)
    with pytest.raises(ep.EntrypointError, match="mount"):
        ep.resolve_model({"OPENGEMMA_MODEL": str(tmp_path / "missing.gguf")})
    with pytest.raises(ep.EntrypointError, match="scheme"):
        ep.resolve_model({"OPENGEMMA_MODEL": "s3://bucket/model"})


def test_vertex_example_uses_routes_the_server_answers():
    tree = ast.parse((DEPLOY / "vertex" / "deploy.py").read_text())
    consts = {
        t.id: n.value.value
        for n in tree.body
        if isinstance(n, ast.Assign)
        for t in n.targets
        if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)
    }
    assert consts["HEALTH_ROUTE"] == "/ready" and consts["PREDICT_ROUTE"] == "/predict"
    assert consts["PORT"] == 8080
    source = (DEPLOY / "vertex" / "deploy.py").read_text()
    assert "serving_container_predict_route=PREDICT_ROUTE" in source
