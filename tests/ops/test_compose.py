"""docker-compose.yml, .env.example and the Dockerfile, held to the code they run.

No Docker engine runs here, so what can be checked without one is: every `ledger` command the
files run parses with the CLI's own parser; every LEDGER_* variable is a setting of
ledger.config and .env.example names each one, at its real default; every healthcheck and
scrape URL is a route of the real app on the port `ledger serve` is told to listen on; the
final image stage has no compiler and runs as a non-root user; the worker can scale; and
`docker-compose config` (Debian's docker-compose, which `.ci/run` installs) and `promtool check
config` accept the files. Without those two tools their tests skip, except in CI (CI=true).
"""

from __future__ import annotations

import ast
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ledger.cli.main import _parser
from ledger.config import VARIABLES, Settings
from ledger.testing import Api
from ledger.testing.browser import in_ci
from ledger.testing.checkout import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
# The services that run the ledger image (its entrypoint is `ledger`).
LEDGER_SERVICES = sorted(name for name, s in SERVICES.items() if str(s.get("image", "")).startswith("ledger:"))

_ASSIGNMENT = re.compile(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")
_LEDGER_NAME = re.compile(r"\bLEDGER_[A-Z0-9_]+\b")
_INTERPOLATION = re.compile(r"\$\{([A-Z][A-Z0-9_]*)")
_URL = re.compile(r"http://(?:127\.0\.0\.1|localhost):(\d+)(/[^'\"\s]*)")
# A `['ledger', ...]` list inside a healthcheck's Python.
_LEDGER_ARGV = re.compile(r"\[\s*'ledger'(?:\s*,\s*'[^']*')*\s*\]")


def _assignments() -> dict[str, tuple[str, bool]]:
    """.env.example's NAME=value lines: value, and whether the line is commented out."""
    found = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if match := _ASSIGNMENT.match(line):
            found[match[2]] = (match[3], match[1] is not None)
    return found


def _environment(service: str) -> dict[str, Any]:
    env = SERVICES[service].get("environment", {})
    assert isinstance(env, dict), f"{service}: environment as a mapping (the file's anchors merge mappings)"
    return env


def _commands() -> list[tuple[str, list[str]]]:
    """Every argument list the files hand to `ledger`: the services' commands, the `ledger`
    calls of the healthchecks, and the Dockerfile's default command."""
    found: list[tuple[str, list[str]]] = [(name, SERVICES[name]["command"]) for name in LEDGER_SERVICES]
    for name, service in SERVICES.items():
        test = service.get("healthcheck", {}).get("test", [])
        for argv in _LEDGER_ARGV.findall(" ".join(test)):
            found.append((f"{name} healthcheck", ast.literal_eval(argv)[1:]))
    cmd = re.search(r"^CMD (\[.*\])$", DOCKERFILE.read_text(), re.M)
    assert cmd, "the Dockerfile names its default command"
    found.append(("Dockerfile CMD", ast.literal_eval(cmd[1])))
    return found


@pytest.mark.parametrize(("where", "argv"), _commands(), ids=[w for w, _ in _commands()])
def test_every_ledger_command_is_a_real_one(where: str, argv: list[str]) -> None:
    assert all(isinstance(a, str) for a in argv), f"{where}: quote every argument ({argv})"
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{where}: `ledger {' '.join(argv)}` is refused by the CLI's parser (exit {exc.code})")
    assert callable(args.func)


def test_the_image_runs_ledger_and_its_services_run_the_image() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r'^ENTRYPOINT \["ledger"\]$', text, re.M)
    assert {"migrate", "api", "worker", "restore-drill"} <= set(LEDGER_SERVICES)
    assert all("entrypoint" not in SERVICES[name] for name in LEDGER_SERVICES)
    assert SERVICES["migrate"]["command"] == ["migrate"]
    assert SERVICES["worker"]["command"] == ["worker"]
    serve = _parser().parse_args(SERVICES["api"]["command"])
    assert serve.command == "serve" and serve.workers == 0, "the api service runs the API alone"
    assert serve.host == "0.0.0.0", "reachable from the other containers and the published port"


def test_every_ledger_variable_is_a_setting_and_env_example_names_each_once() -> None:
    in_compose = set(_LEDGER_NAME.findall(COMPOSE_FILE.read_text()))
    assert in_compose - set(VARIABLES) == set(), "docker-compose.yml names a LEDGER_* that is no setting"
    for service in LEDGER_SERVICES:
        names = {name for name in _environment(service) if not name.startswith("OTEL_")}
        assert names - set(VARIABLES) == set(), f"{service}: {sorted(names - set(VARIABLES))} are no settings"
    named = _LEDGER_NAME.findall(ENV_EXAMPLE.read_text())
    assert sorted(set(named) - set(VARIABLES)) == [], ".env.example names a LEDGER_* that is no setting"
    assert sorted(set(VARIABLES) - set(named)) == [], ".env.example misses a setting (ledger.config.VARIABLES)"
    assigned = [name for name in _assignments() if name.startswith("LEDGER_")]
    assert len(assigned) == len(set(assigned))


def test_env_example_shows_the_real_defaults() -> None:
    """A commented-out line is the default: set, it must change nothing."""
    defaults = Settings.from_env({})
    for name, (value, commented) in _assignments().items():
        if not name.startswith("LEDGER_"):
            continue
        settings = Settings.from_env({name: value})  # a value the service refuses raises here
        if commented:
            assert settings == defaults, f".env.example: {name}={value} is not the default"


def test_what_env_example_sets_reaches_the_containers() -> None:
    """Each LEDGER_* line of .env.example is passed on (a bare name in the environment) to the
    API and the workers, and each one the compose file sets itself is not offered as a line."""
    assigned = {name for name in _assignments() if name.startswith(("LEDGER_", "OTEL_"))}
    for service in ("api", "worker"):
        env = _environment(service)
        passed = {name for name, value in env.items() if value is None}
        fixed = {name for name, value in env.items() if value is not None}
        assert passed == assigned, f"{service}: passed on {sorted(passed ^ assigned)} differs from .env.example"
        assert fixed & assigned == set(), f"{service} sets {sorted(fixed & assigned)} itself"
    # The rest of .env.example is what the compose file interpolates, and nothing else.
    interpolated = set(_INTERPOLATION.findall(COMPOSE_FILE.read_text()))
    others = {name for name in _assignments() if not name.startswith(("LEDGER_", "OTEL_"))}
    assert others == interpolated, f"interpolated but not in .env.example, or the reverse: {others ^ interpolated}"


def test_processes_share_the_spool_the_key_and_the_home() -> None:
    home = re.search(r"LEDGER_HOME=(\S+)", DOCKERFILE.read_text())
    assert home and home[1] == "/var/lib/ledger"
    spool = str(Settings(home=Path(home[1])).spool_dir)
    for service in ("api", "worker"):
        env = _environment(service)
        assert env["LEDGER_HOME"] == home[1]
        assert f"spool:{spool}" in SERVICES[service]["volumes"], f"{service}: the spool volume at {spool}"
        assert SERVICES[service]["secrets"] == ["signing_key"]
        assert env["LEDGER_SIGNING_KEY_FILE"] == "/run/secrets/signing_key"
        assert re.fullmatch(r"postgresql://.+@postgres:5432/.+", env["LEDGER_DATABASE_URL"])
    assert "file" in COMPOSE["secrets"]["signing_key"]


def test_the_worker_can_scale_and_the_order_of_start_is_kept() -> None:
    worker = SERVICES["worker"]
    assert "container_name" not in worker and "ports" not in worker and "hostname" not in worker
    assert SERVICES["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for service in ("api", "worker"):
        assert SERVICES[service]["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
    assert SERVICES["migrate"]["restart"] == "no"


def test_postgres_is_pinned_kept_on_a_volume_and_checked() -> None:
    pg = SERVICES["postgres"]
    assert re.fullmatch(r"postgres:\d+\.\d+-\w+", pg["image"]), "a pinned PostgreSQL image"
    assert "pgdata:/var/lib/postgresql/data" in pg["volumes"]
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    command = " ".join(pg["command"])
    assert "archive_mode=on" in command and "/var/lib/postgresql/archive/%f" in command
    assert "pgarchive:/var/lib/postgresql/archive" in pg["volumes"]
    drill = SERVICES["restore-drill"]
    assert "pgarchive:/var/lib/postgresql/archive:ro" in drill["volumes"]
    assert drill["command"][drill["command"].index("--wal-archive") + 1] == "/var/lib/postgresql/archive"


def test_the_final_image_has_no_build_tools_and_runs_unprivileged() -> None:
    stages = re.split(r"^FROM ", DOCKERFILE.read_text(), flags=re.M)[1:]
    assert len(stages) >= 2, "a builder stage and a final one"
    final = stages[-1]
    assert " AS " not in final.splitlines()[0], "the last stage is the image"
    for tool in ("gcc", "g++", "build-essential", "make ", "apt-get install", "pip install", "COPY . "):
        assert tool not in final, f"the final stage has {tool.strip()}"
    copies = re.findall(r"^COPY (.*)$", final, re.M)
    assert copies and all(c.startswith("--from=builder /opt/venv ") for c in copies), copies
    user = re.findall(r"^USER (\S+)$", final, re.M)
    assert user and user[-1] not in ("root", "0", "0:0")
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE.read_text(), re.M)
    assert base and re.fullmatch(r"python:3\.1[1-9]\.\d+-slim-\w+", base[1]), "a pinned Python image"


def test_the_builder_copies_only_what_exists_and_the_context_lets_through() -> None:
    text = DOCKERFILE.read_text()
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for sources in re.findall(r"^COPY (?!--from)(.*) \S+$", text, re.M):
        for source in sources.split():
            assert (ROOT / source).exists(), f"COPY {source}: no such path"
            assert source in allowed, f"COPY {source}: .dockerignore keeps it out of the context"


async def test_healthchecks_and_the_scrape_ask_real_routes(api: Api) -> None:
    serve = _parser().parse_args(SERVICES["api"]["command"])
    urls = _URL.findall(" ".join(SERVICES["api"]["healthcheck"]["test"]))
    urls += _URL.findall(re.search(r"^HEALTHCHECK .*\n.*$", DOCKERFILE.read_text(), re.M)[0])  # type: ignore[index]
    assert len(urls) == 2
    for port, path in urls:
        assert int(port) == serve.port, f"{path}: port {port}, but serve listens on {serve.port}"
        response = await api.client.get(path)
        assert response.status_code in (200, 503), f"{path}: {response.status_code}"
        if response.status_code == 503:  # not ready: a readiness answer, with its reason
            assert response.json()["code"] in ("no_worker", "migrations_pending", "database_unreachable")
    assert any(p == "/health/ready" for _, p in urls), "the compose file checks readiness, not just liveness"
    published = [p.rsplit(":", 1)[1] for p in SERVICES["api"]["ports"]]
    assert published == [str(serve.port)]
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    assert job["static_configs"] == [{"targets": [f"api:{serve.port}"]}]
    scrape = await api.client.get(job["metrics_path"])
    assert scrape.status_code == 200 and "ledger_database_up" in scrape.text


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard() -> None:
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    grafana = SERVICES["grafana"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert "prometheus" in SERVICES
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "ledger.yml").read_text())["providers"]
    mounts = dict(v.rsplit(":", 2)[:2] for v in grafana["volumes"] if v.startswith("./"))
    by_target = {target: source for source, target in mounts.items()}
    assert (ROOT / by_target[provider["options"]["path"]] / "ledger.json").is_file()
    for name in ("prometheus", "grafana", "otel-collector"):
        assert SERVICES[name]["profiles"] == ["observability"]


def test_the_collector_receives_what_env_example_points_the_service_at() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "otel-collector.yml").read_text())
    endpoint = config["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    value, commented = _assignments()["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert commented, "traces stay off unless the observability profile is used"
    assert value == f"http://otel-collector:{endpoint.rsplit(':', 1)[1]}"
    assert "./deploy/otel-collector.yml:/etc/otelcol/config.yml:ro" in SERVICES["otel-collector"]["volumes"]
    for pipeline in config["service"]["pipelines"].values():
        assert set(pipeline["exporters"]) <= set(config["exporters"])
        assert set(pipeline["receivers"]) <= set(config["receivers"])


def _tool(name: str, hint: str) -> str:
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").is_file() else None)
    if found is None:
        if in_ci():
            pytest.fail(f"{name} is missing: {hint}")
        pytest.skip(f"{name} is missing ({hint})")
    return found


@pytest.mark.parametrize("profiles", [[], ["observability", "drill"]], ids=["default", "all-profiles"])
def test_docker_compose_accepts_the_file(profiles: list[str]) -> None:
    compose = _tool("docker-compose", ".ci/run installs Debian's docker-compose package")
    selected = [arg for p in profiles for arg in ("--profile", p)]
    done = subprocess.run(
        [compose, "--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE_FILE), *selected, "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr


def test_promtool_accepts_the_prometheus_configuration() -> None:
    promtool = _tool("promtool", ".ci/run installs Debian's prometheus package")
    config = ROOT / "deploy" / "prometheus" / "prometheus.yml"
    done = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


RUNBOOK = ROOT / "docs" / "runbook.md"


def test_the_runbook_has_the_anchor_of_every_alert() -> None:
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    linked = {
        rule["annotations"]["runbook_url"].split("#", 1)[1]
        for group in rules["groups"]
        for rule in group["rules"]
        if rule.get("annotations", {}).get("runbook_url", "").startswith("docs/runbook.md#")
    }
    anchors = set(re.findall(r'<a id="([a-z0-9-]+)"></a>', RUNBOOK.read_text()))
    assert linked and linked <= anchors, f"alerts link to missing runbook anchors: {sorted(linked - anchors)}"


def _runbook_commands() -> list[list[str]]:
    """The `ledger ...` invocations in the runbook's shell blocks (after `exec api`, `env`, or
    alone on a line), up to the first shell operator."""
    found = []
    for block in re.findall(r"```sh\n(.*?)```", RUNBOOK.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            try:
                words = shlex.split(line, comments=True)
            except ValueError:  # a heredoc's body, not a command line
                continue
            for i, word in enumerate(words):
                after = words[i + 1 :]
                if word != "ledger" or not after or after[0].startswith("-") or words[i - 1 : i] in (["-U"], ["-u"]):
                    continue
                stop = next((j for j, w in enumerate(after) if w in {"|", ">", "2>", "&&", ";", "||"}), len(after))
                found.append(after[:stop])
    return found


@pytest.mark.parametrize("argv", _runbook_commands(), ids=lambda argv: " ".join(argv[:2]))
def test_every_ledger_command_in_the_runbook_is_a_real_one(argv: list[str]) -> None:
    try:
        _parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"docs/runbook.md: `ledger {' '.join(argv)}` is refused by the CLI's parser (exit {exc.code})")
