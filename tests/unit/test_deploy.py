"""The Docker deployment: docker-compose.yml, deploy/*.Dockerfile, deploy/env.example, .dockerignore.

Everything here is checked by parsing the files, so no Docker engine is needed; the last test
also runs `docker compose config` where the compose plugin is installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "deploy" / "env.example"
SOURCE_DIRS = ("common", "client", "worker")

SERVICES = ("redis", "worker", "predict-worker", "flower", "tensorboard", "client")
WORKERS = ("worker", "predict-worker")
SHARED_VOLUME = "digitq-home"
COMPOSE_ONLY_VARS = {"DIGITQ_REDIS_PASSWORD", "DIGITQ_REDIS_HOST"}
"""Interpolated by compose into DIGITQ_BROKER_URL; never given to a container as a variable."""

TEST_PASSWORD = "pw-for-tests"

# $$ (an escaped dollar), ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?err}, ${NAME?err}, $NAME
_VAR = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Resolve compose's variable syntax in `value` the way `docker compose` does."""

    def resolve(m: re.Match) -> str:
        if m.group(1):
            return "$"
        name, op, arg = m.group(2) or m.group(5), m.group(3), m.group(4)
        val = env.get(name)
        missing = val is None or (op is not None and op.startswith(":") and val == "")
        if op and missing:
            if op.endswith("-"):
                return arg
            raise KeyError(f"{name} is required: {arg}")
        return val or ""

    return _VAR.sub(resolve, value)


def referenced_vars(value: str) -> set[str]:
    return {m.group(2) or m.group(5) for m in _VAR.finditer(value) if not m.group(1)}


def all_strings(node):
    """Every string (keys and values) in a parsed YAML tree."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from all_strings(k)
            yield from all_strings(v)
    elif isinstance(node, list):
        for item in node:
            yield from all_strings(item)


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def argv_of(service: dict, key: str = "command") -> list[str]:
    value = service.get(key) or []
    return value.split() if isinstance(value, str) else [str(v) for v in value]


def option_value(argv: list[str], option: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == option and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
    return None


def mounts(service: dict) -> dict[str, str]:
    """{source: container path} for the service's volumes (short or long syntax)."""
    out = {}
    for v in service.get("volumes") or []:
        if isinstance(v, str):
            source, target = v.split(":")[:2]
        else:
            source, target = v.get("source", ""), v["target"]
        out[source] = target
    return out


def published(service: dict) -> list[tuple[str, str]]:
    """(host ip, host port) for each port the service publishes on the host."""
    out = []
    for p in service.get("ports") or []:
        if isinstance(p, dict):
            if p.get("published"):
                out.append((str(p.get("host_ip", "")), str(p["published"])))
            continue
        parts = str(p).rsplit(":", 2)
        if len(parts) == 3:
            out.append((parts[0], parts[1]))
        elif len(parts) == 2:
            out.append(("", parts[0]))
    return out


def gpu_devices(service: dict) -> list[dict]:
    return ((service.get("deploy") or {}).get("resources") or {}).get("reservations", {}).get("devices") or []


def is_pinned(image: str) -> bool:
    """A tag or digest is given, and the tag is not `latest`."""
    if "@sha256:" in image:
        return True
    name_tag = image.rsplit("/", 1)[-1]
    return ":" in name_tag and name_tag.split(":", 1)[1] not in ("", "latest")


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    out, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def copy_sources(args: str) -> list[str] | None:
    """Sources of a COPY/ADD from the build context; None for --from= copies and heredocs."""
    if "<<" in args:
        return None
    if args.startswith("["):
        words = json.loads(args)
    else:
        words = args.split()
    flags = [w for w in words if w.startswith("--")]
    if any(f.startswith("--from") for f in flags):
        return None
    words = [w for w in words if not w.startswith("--")]
    return words[:-1]


def dockerignore_rules() -> list[tuple[bool, re.Pattern]]:
    rules = []
    path = ROOT / ".dockerignore"
    for raw in path.read_text().splitlines() if path.exists() else []:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**", i):
                regex += ".*"
                i += 2
                if pattern.startswith("/", i):
                    regex = regex[:-2] + "(?:.*/)?"
                    i += 1
                continue
            c = pattern[i]
            regex += "[^/]*" if c == "*" else "[^/]" if c == "?" else c if c in "[]-" else re.escape(c)
            i += 1
        rules.append((negate, re.compile(regex + r"\Z")))
    return rules


def is_dockerignored(rel: str) -> bool:
    """Whether .dockerignore keeps `rel` (or a folder above it) out of the build context."""
    parts = rel.strip("/").split("/")
    ignored = False
    for negate, rx in dockerignore_rules():
        if any(rx.match("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            ignored = not negate
    return ignored


def code_env_names() -> set[str]:
    names = set()
    for folder in SOURCE_DIRS:
        for f in (ROOT / folder).rglob("*.py"):
            names |= set(re.findall(r"\bDIGITQ_[A-Z0-9_]+", f.read_text()))
    return names


def builds(services: dict):
    """(service name, context dir, Dockerfile path, build args) for each service with a build."""
    for name, svc in services.items():
        build = svc.get("build")
        if build is None:
            continue
        if isinstance(build, str):
            build = {"context": build}
        context = (ROOT / build.get("context", ".")).resolve()
        yield name, context, context / build.get("dockerfile", "Dockerfile"), build.get("args") or {}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


# --- services -------------------------------------------------------------------------------


def test_expected_services_exist(services):
    assert set(SERVICES) <= set(services)


def test_redis_persists_and_requires_a_password(services):
    redis = services["redis"]
    argv = argv_of(redis)
    assert redis["image"].startswith("redis:7.")
    assert option_value(argv, "--appendonly") == "yes"
    assert option_value(argv, "--requirepass") == "${DIGITQ_REDIS_PASSWORD:?set DIGITQ_REDIS_PASSWORD in .env}"
    assert mounts(redis).get("redis-data") == "/data"


def test_redis_is_published_on_localhost_at_most(services):
    assert all(ip == "127.0.0.1" for ip, _ in published(services["redis"]))


def test_redis_healthcheck_authenticates_and_pings(services):
    redis = services["redis"]
    test = " ".join(redis["healthcheck"]["test"])
    assert "redis-cli" in test and "ping" in test
    # redis-cli exits 0 on a NOAUTH error, so the check must look at the reply.
    assert "PONG" in test
    assert "REDISCLI_AUTH" in env_of(redis) or " -a " in test


def test_worker_reserves_all_gpus(services):
    devices = gpu_devices(services["worker"])
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) and d.get("count") == "all"
               for d in devices)


@pytest.mark.parametrize("name", [*WORKERS, "client"])
def test_shared_volume_is_mounted_at_digitq_home(services, compose, name):
    svc = services[name]
    env = env_of(svc)
    assert SHARED_VOLUME in compose["volumes"]
    home = mounts(svc).get(SHARED_VOLUME)
    assert home and env.get("DIGITQ_HOME") == home
    assert env.get("DIGITQ_DATA_DIR", home + "/data").startswith(home + "/")


def test_tensorboard_reads_the_jobs_on_the_shared_volume(services):
    tb = services["tensorboard"]
    home = mounts(tb)[SHARED_VOLUME]
    assert option_value(argv_of(tb), "--logdir") == f"{home}/jobs"
    assert env_of(services["worker"])["DIGITQ_HOME"] == home


@pytest.mark.parametrize("name", ["worker", "predict-worker", "flower", "client"])
def test_broker_url_points_at_the_redis_service_with_the_password(services, name):
    raw = env_of(services[name])["DIGITQ_BROKER_URL"]
    assert "${DIGITQ_REDIS_PASSWORD" in raw  # interpolated, never written down
    url = urlparse(interpolate(raw, {"DIGITQ_REDIS_PASSWORD": TEST_PASSWORD}))
    assert url.scheme == "redis"
    assert url.hostname == "redis" and url.hostname in services
    assert url.port == 6379
    assert url.password == TEST_PASSWORD


def test_worker_serves_training(services):
    assert "train" in option_value(argv_of(services["worker"]), "--queues").split(",")


def test_predict_worker_is_cpu_only_and_serves_only_predict(services):
    svc = services["predict-worker"]
    assert not gpu_devices(svc)
    assert "gpus" not in svc and svc.get("runtime") != "nvidia"
    assert option_value(argv_of(svc), "--queues") == "predict"
    assert "DIGITQ_GPUS" not in env_of(svc)
    assert "gpu" not in str((svc["build"].get("args") or {}).get("BASE_IMAGE", ""))


def test_containers_get_only_digitq_variables_the_code_reads(services):
    known = code_env_names()
    assert {"DIGITQ_BROKER_URL", "DIGITQ_HOME", "DIGITQ_DATA_DIR"} <= known  # the scan works
    for name, svc in services.items():
        env = env_of(svc)
        given = {k for k in env if k.startswith("DIGITQ_")}
        assert given <= known, f"{name} sets variables no code reads: {sorted(given - known)}"
        assert not given & COMPOSE_ONLY_VARS, f"{name} passes compose-only variables"
        for key, value in env.items():
            if "DIGITQ_REDIS_PASSWORD" in referenced_vars(value) and name != "redis":
                assert value.startswith("redis://"), f"{name}: the password leaves the URL in {key}"


def test_client_runs_only_on_request(services):
    assert services["client"].get("profiles") == ["client"]
    assert argv_of(services["client"], "entrypoint") == ["digitq"]


@pytest.mark.parametrize("name", ["flower", "tensorboard"])
def test_dashboards_are_published_on_localhost_only(services, name):
    ports = published(services[name])
    assert ports and all(ip == "127.0.0.1" for ip, _ in ports)


@pytest.mark.parametrize("name", WORKERS)
def test_workers_can_scale(services, name):
    svc = services[name]
    assert "container_name" not in svc
    assert "hostname" not in svc  # the Celery node name is digitq@<hostname>: replicas must differ
    assert not published(svc)


@pytest.mark.parametrize("name", ["redis", *WORKERS])
def test_healthchecks_are_present(services, name):
    hc = services[name].get("healthcheck") or {}
    assert hc.get("test") and not hc.get("disable") and hc["test"][0] != "NONE"


def test_worker_healthcheck_pings_its_own_node_name(services):
    test = services["worker"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python3", "-c"]
    script = test[3]
    compile(script, "worker-healthcheck", "exec")
    assert '"digitq@" + host' in script and "socket.gethostname()" in script
    # ... the name digitq-worker gives itself by default
    assert 'default=f"digitq@{socket.gethostname()}"' in (ROOT / "worker" / "__main__.py").read_text()
    assert services["predict-worker"]["healthcheck"] == services["worker"]["healthcheck"]


# --- images and Dockerfiles -----------------------------------------------------------------


def test_builds_use_existing_dockerfiles(services):
    found = list(builds(services))
    assert {name for name, *_ in found} >= {*WORKERS, "client"}
    for name, context, dockerfile, _ in found:
        assert context.is_dir(), name
        assert dockerfile.is_file(), f"{name}: {dockerfile} is missing"


def test_dockerfile_copies_exist_and_are_not_ignored(services):
    checked = set()
    for _, context, dockerfile, _ in builds(services):
        if dockerfile in checked:
            continue
        checked.add(dockerfile)
        for instruction, args in dockerfile_instructions(dockerfile):
            if instruction not in ("COPY", "ADD"):
                continue
            for source in copy_sources(args) or []:
                rel = source.strip("/") or "."
                assert (context / rel).exists(), f"{dockerfile.name} copies {source}, which is missing"
                assert not is_dockerignored(rel), f"{dockerfile.name} copies {source}, which .dockerignore drops"
    assert checked


def test_images_are_pinned(services):
    for name, svc in services.items():
        if "image" in svc:
            assert is_pinned(svc["image"]), f"{name}: {svc['image']}"
    for name, _, dockerfile, args in builds(services):
        instructions = dockerfile_instructions(dockerfile)
        defaults = {}
        for instruction, rest in instructions:
            if instruction == "FROM":
                break
            if instruction == "ARG" and "=" in rest:
                key, value = rest.split("=", 1)
                defaults[key.strip()] = value.strip()
        for instruction, rest in instructions:
            if instruction != "FROM":
                continue
            image = rest.split()[0] if not rest.startswith("--") else rest.split()[1]
            for chosen in ({**defaults}, {**defaults, **{k: str(v) for k, v in args.items()}}):
                resolved = interpolate(image, chosen)
                assert is_pinned(resolved), f"{name}: {dockerfile.name} FROM {resolved}"


def test_worker_image_base_is_a_build_argument(services):
    dockerfile = ROOT / "deploy" / "worker.Dockerfile"
    instructions = dockerfile_instructions(dockerfile)
    assert ("FROM", "${BASE_IMAGE}") in instructions
    first_from = next(i for i, (ins, _) in enumerate(instructions) if ins == "FROM")
    assert any(ins == "ARG" and rest.startswith("BASE_IMAGE=") for ins, rest in instructions[:first_from])
    bases = {name: args.get("BASE_IMAGE") for name, _, df, args in builds(services) if df == dockerfile}
    assert "gpu" in bases["worker"] and "gpu" not in bases["predict-worker"]


@pytest.mark.parametrize("dockerfile", ["worker.Dockerfile", "client.Dockerfile"])
def test_images_run_as_a_user_with_digitq_home(services, dockerfile):
    instructions = dockerfile_instructions(ROOT / "deploy" / dockerfile)
    users = [rest for ins, rest in instructions if ins == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0")
    env = " ".join(rest for ins, rest in instructions if ins == "ENV")
    assert "DIGITQ_HOME=" + env_of(services["worker"])["DIGITQ_HOME"] in env
    assert not re.search(r"(PASSWORD|SECRET|TOKEN)", env)


def test_dockerignore_keeps_secrets_and_clutter_out_of_the_context():
    for path in (".env", ".venv/bin/python", ".git/HEAD", "tests/unit/test_deploy.py", "bench/results/x.json",
                 "worker/__pycache__/train.cpython-311.pyc"):
        assert is_dockerignored(path), path
    for path in ("pyproject.toml", "common/settings.py", "worker/train.py", "client/cli.py"):
        assert not is_dockerignored(path), path


# --- secrets and variables ------------------------------------------------------------------


def test_no_secret_literals_in_the_compose_file(compose):
    text = COMPOSE_FILE.read_text()
    for password in re.findall(r"redis://:([^@\s]*)@", text):
        assert password.startswith("${"), f"a literal password in a URL: {password!r}"
    for svc in compose["services"].values():
        for key, value in env_of(svc).items():
            if re.search(r"PASSWORD|SECRET|TOKEN|AUTH", key):
                assert value == "" or value.startswith("${"), f"{key} is a literal"
    for value in all_strings(compose):
        for m in _VAR.finditer(value):
            if m.group(2) == "DIGITQ_REDIS_PASSWORD":
                assert m.group(3) in (None, ":?", "?"), "the password must not have a default"


def test_env_example_lists_every_interpolated_variable(compose):
    used = set().union(*(referenced_vars(s) for s in all_strings(compose)))
    assert "DIGITQ_REDIS_PASSWORD" in used
    listed = dict(re.findall(r"^([A-Z_][A-Z0-9_]*)=(.*)$", ENV_EXAMPLE.read_text(), re.M))
    assert used <= set(listed), f"missing from deploy/env.example: {sorted(used - set(listed))}"
    assert listed["DIGITQ_REDIS_PASSWORD"] == "change-me"


def test_compose_resolves_with_only_the_password_set(compose):
    resolved = [interpolate(s, {"DIGITQ_REDIS_PASSWORD": TEST_PASSWORD}) for s in all_strings(compose)]
    assert not any("${" in s for s in resolved)
    with pytest.raises(KeyError, match="DIGITQ_REDIS_PASSWORD"):
        for s in all_strings(compose):
            interpolate(s, {})


# --- the real parser, where present ---------------------------------------------------------


def _compose_plugin() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _compose_plugin(), reason="no docker compose plugin")
def test_docker_compose_config_accepts_the_file():
    env = {**os.environ, "DIGITQ_REDIS_PASSWORD": TEST_PASSWORD}
    proc = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "--profile", "client", "config", "--format", "json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    config = json.loads(proc.stdout)
    assert set(SERVICES) <= set(config["services"])
    assert TEST_PASSWORD in config["services"]["worker"]["environment"]["DIGITQ_BROKER_URL"]


# --- deploy/sentinel.yml: the optional Redis failover setup ------------------------------------

SENTINEL_FILE = ROOT / "deploy" / "sentinel.yml"


def test_sentinel_override_adds_a_replica_and_three_sentinels_that_the_workers_use():
    from digitq.common.redis_client import parse_sentinel_url
    from digitq.common.settings import check_broker_url

    over = yaml.safe_load(SENTINEL_FILE.read_text())
    svc = over["services"]
    sentinels = [name for name, s in svc.items() if "--sentinel" in " ".join(map(str, s.get("command") or []))]
    assert sorted(sentinels) == ["sentinel-1", "sentinel-2", "sentinel-3"]
    assert "--replicaof" in svc["redis-replica"]["command"]
    for name in ("redis", "redis-replica"):  # either may be the master after a failover
        argv = svc[name]["command"]
        assert "--masterauth" in argv and argv[argv.index("--maxmemory-policy") + 1] == "noeviction"
    known = code_env_names()
    for name in ("worker", "predict-worker", "client"):
        env = {k: interpolate(v, {"DIGITQ_REDIS_PASSWORD": TEST_PASSWORD}) for k, v in svc[name]["environment"].items()}
        assert set(env) <= known, f"{name} sets variables no code reads"
        url = check_broker_url(env["DIGITQ_BROKER_URL"])
        hosts = parse_sentinel_url(url).sentinels
        assert sorted(h for h, _ in hosts) == sorted(sentinels) and {p for _, p in hosts} == {26379}
        assert parse_sentinel_url(url).password == TEST_PASSWORD
    conf = svc["sentinel-1"]["command"][-1]
    assert "sentinel monitor digitq redis 6379 2" in conf and "resolve-hostnames yes" in conf
    assert "flower" not in [n for n, s in svc.items() if not s.get("profiles")], "flower speaks to one Redis only"
