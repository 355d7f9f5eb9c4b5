"""docker-compose.yml and the Dockerfiles, checked without Docker (none can run here).

The file is parsed and its services, ports, healthchecks and environment are checked against what
the code reads; every command the stack runs is run here outside Docker: the LocalStack init script
(against moto S3, through an `awslocal` shim over the AWS CLI), the ingest job's commands (against
moto S3, with the tiny model and a LanceDB index standing in for the OpenSearch container), and the
api command (up to the point where uvicorn would start).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import boto3
import pytest
import yaml
from typer.testing import CliRunner

from mediasearch.cli import app
from mediasearch.core.settings import Settings, get_settings
from tests.conftest import serving_index

ROOT = Path(__file__).resolve().parents[1]
INIT_DIR = ROOT / "infra" / "localstack-init"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    return dict(env) if isinstance(env, dict) else dict(e.split("=", 1) for e in env)


def test_services_and_ports(compose: dict) -> None:
    services = compose["services"]
    assert set(services) == {"opensearch", "localstack", "api", "ingest"}
    assert "9200:9200" in services["opensearch"]["ports"]
    assert "4566:4566" in services["localstack"]["ports"]
    assert "8000:8000" in services["api"]["ports"]
    for name in ("opensearch", "localstack", "api"):
        assert services[name]["healthcheck"]["test"], name


def test_opensearch_single_node_for_local_dev(compose: dict) -> None:
    os_ = compose["services"]["opensearch"]
    assert re.fullmatch(r"opensearchproject/opensearch:2\.19\.\d+", os_["image"])
    env = env_of(os_)
    assert env["discovery.type"] == "single-node"
    assert env["DISABLE_SECURITY_PLUGIN"] == "true"
    heap = dict(re.findall(r"-Xm([sx])(\S+)", env["OPENSEARCH_JAVA_OPTS"]))
    assert heap["s"] == heap["x"]  # equal min/max heap, as OpenSearch recommends
    assert os_["ulimits"]["memlock"] == {"soft": -1, "hard": -1}
    assert os_["ulimits"]["nofile"]["soft"] >= 65536
    assert "_cluster/health" in " ".join(os_["healthcheck"]["test"])


def test_localstack_is_pinned_and_passes_the_token_through(compose: dict) -> None:
    ls = compose["services"]["localstack"]
    tag = ls["image"].split(":", 1)[1]
    assert tag != "latest" and (re.fullmatch(r"4\.\d+(\.\d+)?", tag) or tag == "community-archive")
    env = env_of(ls)
    assert env["LOCALSTACK_AUTH_TOKEN"] == "${LOCALSTACK_AUTH_TOKEN:-}"
    assert "s3" in env["SERVICES"].split(",")
    (mount,) = ls["volumes"]
    host, container = mount.split(":")[:2]
    assert (ROOT / host).resolve() == INIT_DIR and container == "/etc/localstack/init/ready.d"
    scripts = sorted(INIT_DIR.glob("*.sh"))
    assert scripts and all(s.stat().st_mode & stat.S_IXUSR for s in scripts)


def test_app_services_point_at_both_backends(compose: dict) -> None:
    services = compose["services"]
    fields = set(Settings.model_fields) | {"log_level"}
    for name in ("api", "ingest"):
        svc = services[name]
        env = env_of(svc)
        for key in env:
            if key.startswith("MEDIASEARCH_"):
                assert key.removeprefix("MEDIASEARCH_").lower() in fields, key
        assert env["MEDIASEARCH_INDEX_BACKEND"] == "opensearch"
        assert urlparse(env["MEDIASEARCH_OPENSEARCH_URL"]).hostname == "opensearch"
        s3_host = urlparse(env["AWS_ENDPOINT_URL"]).hostname
        assert s3_host == "localstack" or s3_host in services["localstack"]["networks"]["default"]["aliases"]
        bucket = urlparse(env["MEDIASEARCH_STORE"]).netloc
        assert bucket == env_of(services["localstack"])["MEDIASEARCH_BUCKET"]
        assert svc["depends_on"] == {
            "opensearch": {"condition": "service_healthy"},
            "localstack": {"condition": "service_healthy"},
        }
        assert (ROOT / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
    assert services["ingest"]["restart"] == "no"


def test_dockerfiles() -> None:
    api = (ROOT / "docker" / "api.Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.1[1-9]-slim$", api, re.M)
    assert 'CMD ["mediasearch", "serve", "--host", "0.0.0.0", "--port", "8000"]' in api
    lam = (ROOT / "docker" / "lambda.Dockerfile").read_text()
    assert re.search(r"^FROM public\.ecr\.aws/lambda/python:3\.1[1-9]$", lam, re.M)
    cmd = re.search(r'^CMD \["([\w.]+)"\]$', lam, re.M)
    assert cmd and cmd.group(1) == "query_lambda.handler.handler"
    assert (ROOT / "query_lambda" / "handler.py").is_file()
    # A build argument in a source path stands for its default here (CLIP_ONNX: an empty stand-in).
    defaults = dict(re.findall(r"^ARG (\w+)=(\S+)$", api + lam, re.M))
    for copied in re.findall(r"^COPY (\S+)", api + lam, re.M):
        copied = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], copied)
        assert (ROOT / copied).exists(), copied
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored and "mediasearch" not in ignored


@pytest.fixture
def awslocal(tmp_path: Path, moto_endpoint: str) -> dict[str, str]:
    """PATH with `awslocal` = the AWS CLI pointed at moto, which is what LocalStack's awslocal does."""
    aws = shutil.which("aws")
    if aws is None:
        pytest.skip("the AWS CLI is not installed")
    shim = tmp_path / "bin" / "awslocal"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(aws)} --endpoint-url "$AWS_ENDPOINT_URL" "$@"\n')
    shim.chmod(0o755)
    env = dict(os.environ, PATH=f"{shim.parent}:{os.environ['PATH']}", AWS_DEFAULT_REGION="us-east-1")
    return env


def test_init_script_creates_the_bucket_idempotently(compose: dict, awslocal: dict[str, str]) -> None:
    bucket = "compose-init-test"
    env = dict(awslocal, MEDIASEARCH_BUCKET=bucket)
    for script in sorted(INIT_DIR.glob("*.sh")):
        for _ in range(2):  # LocalStack may run it again after a restart
            proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0, proc.stderr
    s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    s3.head_bucket(Bucket=bucket)
    # The healthcheck's command succeeds once the bucket exists.
    health = compose["services"]["localstack"]["healthcheck"]["test"][1].replace("mediasearch", bucket)
    assert subprocess.run(["sh", "-c", health], env=env, capture_output=True, timeout=60).returncode == 0


def test_ingest_job_commands_run_outside_docker(
    compose: dict, moto_endpoint: str, tmp_path: Path, tiny_clip_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ingest service's commands, in order, with the service's own settings except: the S3
    endpoint (moto for LocalStack), the index (LanceDB for the OpenSearch container), the model (the
    tiny one) and, to stay fast, `--limit 24 --no-videos` on the corpus generator (the video path has
    its own end-to-end test over moto S3)."""
    svc = compose["services"]["ingest"]
    env = env_of(svc)
    bucket = urlparse(env["MEDIASEARCH_STORE"]).netloc
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    for key, value in env.items():
        if key.startswith("MEDIASEARCH_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("MEDIASEARCH_INDEX_BACKEND", "lancedb")
    monkeypatch.setenv("MEDIASEARCH_LANCEDB_URI", str(tmp_path / "lancedb"))
    monkeypatch.setenv("MEDIASEARCH_CLIP_MODEL", str(tiny_clip_dir))
    monkeypatch.setenv("MEDIASEARCH_DEVICE", "cpu")
    get_settings.cache_clear()

    shell, flag, script = svc["command"]
    assert (shell, flag) == ("sh", "-c")
    commands = [shlex.split(c) for c in script.split("&&")]
    assert [c[:2] for c in commands] == [["mediasearch", "demo-data"], ["mediasearch", "ingest"]]
    runner = CliRunner()
    try:
        for argv in commands:
            args = argv[1:] + (["--limit", "24", "--no-videos"] if argv[1] == "demo-data" else [])
            result = runner.invoke(app, args)
            assert result.exit_code == 0, result.output
        assert re.search(r"\bindexed 24\b", result.output), result.output
        assert serving_index(tmp_path / "lancedb", env["MEDIASEARCH_COLLECTION"]).count() == 24
        again = runner.invoke(app, commands[1][1:])  # a second `up` re-runs the job: nothing to do
        assert again.exit_code == 0 and "unchanged 24" in again.output
    finally:
        get_settings.cache_clear()


def test_api_command_starts_the_server(compose: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    calls: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda target, **kw: calls.append({"target": target, **kw}))
    argv = compose["services"]["api"]["command"]
    assert argv[0] == "mediasearch"
    # The service's own settings (OpenSearch), as the container has them: `serve` checks that a local
    # index exists before starting, which holds for LanceDB only.
    service_env = compose["services"]["api"]["environment"]
    env = {k: v for k, v in service_env.items() if k.startswith("MEDIASEARCH_") and "${" not in v}
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, argv[1:], env=env)
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    (call,) = calls
    assert call["target"] == "mediasearch.query.api:create_app" and call["factory"] is True
    assert (call["host"], call["port"]) == ("0.0.0.0", 8000)  # reachable through the published port
