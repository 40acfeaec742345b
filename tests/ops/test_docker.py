"""docker/: what can be checked without a docker engine.

- compose.yaml against the compose specification's JSON schema (the copy vendored by
  check-jsonschema), raw and with its variables interpolated the way compose does;
- every file it mounts exists, every named volume is declared, every profile is there and
  every long-running service has a health check;
- every PYLON_* variable it passes is a setting Pylon reads, and the provider's environment
  makes a valid configuration;
- every `pylon ...` command line in it (commands and health checks) parses against the real CLI;
- the Dockerfile passes hadolint, copies only paths that exist and that the build context
  (the root .dockerignore) lets through, and its final stage is slim, non-root, PYLON_HOME=/data;
- strfry.conf binds 0.0.0.0:7777 with AUTH off, at the paths compose mounts.

Not checked here (no engine): building the image, running any container or health check.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from pylon.ops.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
PROFILES = {"relay", "nexus", "wallet", "provider", "monitoring"}
# what an operator must say for the provider and monitoring profiles (compose refuses without them)
REQUIRED = {"PYLON_PRICE_MSAT": "1000", "PYLON_WALLET": "dev:///wallet/ledger.sqlite?account=provider",
            "GRAFANA_ADMIN_PASSWORD": "secret"}
SETTINGS_VARS = {"PYLON_" + name.upper() for name in Settings.model_fields}
CODE_VARS = SETTINGS_VARS | {"PYLON_HOME"}          # read by pylon.ops.config / pylon.home
COMPOSE_ONLY_VARS = {"PYLON_IMAGE"}                   # read by compose itself (documented)
BIN = Path(sys.executable).parent


def load_compose() -> dict:
    return YAML(typ="safe").load(COMPOSE.read_text())


# --------------------------------------------------------------- compose interpolation
_VAR = re.compile(r"\$(?:\$|\{(?P<braced>[^}]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value, env: dict[str, str], seen: set[str] | None = None):
    """Compose's interpolation: $$, $VAR, ${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:?e}, ${VAR?e}, ${VAR:+r}."""
    if isinstance(value, dict):
        return {k: interpolate(v, env, seen) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, seen) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        expr = m.group("braced") if m.group("braced") is not None else m.group("plain")
        name = re.match(r"[A-Za-z_][A-Za-z0-9_]*", expr)
        assert name, f"bad interpolation {m.group(0)!r}"
        name, rest = name.group(0), expr[name.end():]
        if seen is not None:
            seen.add(name)
        val = env.get(name)
        if rest.startswith(":-"):
            return val if val else rest[2:]
        if rest.startswith("-"):
            return val if val is not None else rest[1:]
        if rest.startswith(":?") or rest.startswith("?"):
            if not val:
                raise AssertionError(f"compose would refuse: {name} is required ({rest})")
            return val
        if rest.startswith(":+"):
            return rest[2:] if val else ""
        assert rest == "", f"unsupported interpolation {m.group(0)!r}"
        return val or ""

    return _VAR.sub(sub, value)


def interpolated(env: dict[str, str] | None = None) -> dict:
    return interpolate(load_compose(), {**REQUIRED, **(env or {})})


def variables_used() -> set[str]:
    seen: set[str] = set()
    interpolate(load_compose(), REQUIRED, seen)
    return seen


def pylon_services(doc: dict) -> dict[str, dict]:
    """Services that run our image (they have the build section from the x-pylon anchor)."""
    return {n: s for n, s in doc["services"].items() if s.get("build")}


# --------------------------------------------------------------- schema
def check_jsonschema(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
                          capture_output=True, text=True, timeout=120)


def test_compose_matches_the_compose_spec_raw():
    result = check_jsonschema(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_matches_the_compose_spec_interpolated(tmp_path):
    out = tmp_path / "compose.json"
    out.write_text(json.dumps(interpolated()))
    result = check_jsonschema(out)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_is_not_vacuous(tmp_path):
    """A typo'd key and a wrong type are refused by the same check."""
    doc = interpolated()
    doc["services"]["strfry"]["helthcheck"] = doc["services"]["strfry"].pop("healthcheck")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    assert check_jsonschema(bad).returncode != 0
    doc = interpolated()
    doc["services"]["vllm"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] = "gpu"
    bad.write_text(json.dumps(doc))
    assert check_jsonschema(bad).returncode != 0


# --------------------------------------------------------------- structure
def test_profiles_and_health_checks():
    doc = interpolated()
    profiles = {p for s in doc["services"].values() for p in s.get("profiles", [])}
    assert profiles == PROFILES
    for name, svc in doc["services"].items():
        assert svc.get("profiles"), f"{name} has no profile: a bare `up` would start it"
        hc = svc.get("healthcheck", {})
        if svc.get("restart") == "no":  # one-shot jobs have nothing to check
            assert hc.get("disable") is True, name
        else:
            assert hc.get("test"), f"{name} has no health check"
            assert not hc.get("disable"), name


def test_relay_profiles_serve_port_7777_on_localhost():
    doc = interpolated()
    for name in ("strfry", "nexus"):
        ports = doc["services"][name]["ports"]
        assert "127.0.0.1:7777:7777" in ports, (name, ports)
        assert "relay" in doc["services"][name]["networks"]["default"]["aliases"]


def test_provider_runs_next_to_vllm_with_a_gpu():
    doc = interpolated()
    vllm = doc["services"]["vllm"]
    assert vllm["image"].startswith("vllm/vllm-openai:")
    [device] = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert "--model" in vllm["command"]
    provider = doc["services"]["provider"]
    assert provider["command"][0] == "serve"
    assert provider["depends_on"]["vllm"]["condition"] == "service_healthy"
    assert provider["environment"]["PYLON_BACKEND"] == "http://vllm:8000/v1"
    custom = interpolated({"VLLM_MODEL": "org/model", "PYLON_PRICE_MSAT": "2100"})
    assert "org/model" in custom["services"]["vllm"]["command"]
    assert custom["services"]["provider"]["environment"]["PYLON_PRICE_MSAT"] == "2100"


def dockerfile_env() -> dict[str, str]:
    env = {}
    for instr, args in final_stage():
        if instr == "ENV":
            for key, val in re.findall(r"(\w+)=(\S+)", args):
                env[key] = val
    return env


def test_state_volumes_are_where_the_image_keeps_state():
    doc = interpolated()
    home = dockerfile_env()["PYLON_HOME"]
    for name in ("provider", "nexus", "nwc"):
        targets = [v.split(":")[1] for v in doc["services"][name]["volumes"]]
        assert home in targets, f"{name}: PYLON_HOME ({home}) is not on a volume"
    for name in ("provider", "wallet-init", "nwc"):
        assert "wallet-ledger:/wallet" in doc["services"][name]["volumes"], name
    assert "dev:///wallet/ledger.sqlite" in doc["services"]["provider"]["environment"]["PYLON_WALLET"]


def test_every_mounted_file_exists_and_named_volumes_are_declared():
    doc = interpolated()
    declared = set(doc.get("volumes") or {})
    for name, svc in doc["services"].items():
        for vol in svc.get("volumes", []):
            source = vol["source"] if isinstance(vol, dict) else vol.split(":")[0]
            if source.startswith((".", "/", "~")):
                path = (DOCKER / source).resolve()
                assert path.exists(), f"{name} mounts {source}, which does not exist ({path})"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"
        build = svc.get("build")
        if build:
            context = (DOCKER / build["context"]).resolve()
            assert context == ROOT
            assert (context / build["dockerfile"]).is_file()


# --------------------------------------------------------------- environment
def test_every_pylon_variable_passed_is_read_by_the_code():
    doc = interpolated()
    for name, svc in doc["services"].items():
        env = svc.get("environment") or {}
        keys = env if isinstance(env, dict) else [e.split("=", 1)[0] for e in env]
        for key in keys:
            if key.startswith("PYLON_"):
                assert key in CODE_VARS, f"{name} passes {key}, which Pylon does not read"
    for var in variables_used():
        if var.startswith("PYLON_"):
            assert var in CODE_VARS | COMPOSE_ONLY_VARS, f"compose reads ${{{var}}}: not a Pylon setting"
    readme = (DOCKER / "README.md").read_text()
    for var in COMPOSE_ONLY_VARS:
        assert var in readme, f"{var} is read by compose only: document it"


def test_provider_environment_is_a_valid_configuration(tmp_path):
    """What compose hands `pylon serve` (defaults, and a typical .env) loads as Settings."""
    for overrides in ({}, {"PYLON_RELAYS": "wss://relay.damus.io,wss://nos.lol", "PYLON_PRICE_MSAT": "1000",
                           "PYLON_FREE": "true", "PYLON_MODELS": "a,b"}):
        env = interpolated(overrides)["services"]["provider"]["environment"]
        settings = load_settings(path=tmp_path / "absent.toml", environ=env)
        assert settings.relays == env["PYLON_RELAYS"].split(",")
        assert settings.backend == "http://vllm:8000/v1"
        assert settings.wallet == env["PYLON_WALLET"]
        assert settings.log_format == "json"


# --------------------------------------------------------------- commands
def pylon_command_lines(doc: dict) -> list[tuple[str, list[str]]]:
    """(where, argv after `pylon`) for every command and health check that runs pylon."""
    lines = []
    for name, svc in pylon_services(doc).items():
        lines.append((f"{name}.command", [str(a) for a in svc["command"]]))
        test = svc.get("healthcheck", {}).get("test")
        if test and test[0] == "CMD" and test[1] == "pylon":
            lines.append((f"{name}.healthcheck", [str(a) for a in test[2:]]))
        elif test and test[0] == "CMD-SHELL" and test[1].startswith("pylon "):
            lines.append((f"{name}.healthcheck", shlex.split(test[1])[1:]))
    return lines


def parse_error(argv: list[str]) -> str | None:
    """None if `pylon ARGV` parses against the real CLI (nothing runs), else why not."""
    import typer

    try:  # typer >= 0.2x vendors its own click
        from typer import _click as click
    except ImportError:  # pragma: no cover - older typer
        import click
    from cli.main import app

    cmd, ctx, args = typer.main.get_command(app), None, list(argv)
    while hasattr(cmd, "get_command") and hasattr(cmd, "list_commands"):  # a group
        ctx = click.Context(cmd, info_name=cmd.name, parent=ctx)
        sub = cmd.get_command(ctx, args[0]) if args else None
        if sub is None:
            return f"no such command {args[:1]}"
        cmd, args = sub, args[1:]
    try:
        cmd.make_context(cmd.name, args, parent=ctx)
    except click.ClickException as exc:
        return exc.format_message()
    return None


def test_command_line_check_is_not_vacuous():
    assert parse_error(["relay", "--port", "7777"]) is None
    assert "no such command" in parse_error(["no-such-command"])
    assert parse_error(["relay", "--no-such-flag"]) is not None
    assert parse_error(["relay", "--port", "not-a-number"]) is not None


def test_every_pylon_command_line_parses_against_the_cli():
    lines = pylon_command_lines(interpolated())
    assert {where.split(".")[0] for where, _ in lines} == {"nexus", "wallet-init", "nwc", "provider"}
    for where, argv in lines:
        error = parse_error(argv)
        assert error is None, f"{where}: `pylon {' '.join(argv)}` does not parse: {error}"


def test_core_cli_starts_without_the_dspy_extra():
    """The image installs the core only (no dspy): `pylon --help` must not import it."""
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'dspy' or name.startswith('dspy.'):\n"
            "            raise ImportError('dspy is not installed in the image')\n"
            "sys.meta_path.insert(0, Block())\n"
            "sys.argv = ['pylon', '--help']\n"
            "from cli.main import app\n"
            "app()\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=ROOT, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "relay" in result.stdout and "doctor" in result.stdout


# --------------------------------------------------------------- Dockerfile
def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instr, _, args = line.partition(" ")
            out.append((instr.upper(), args.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    instrs = instructions()
    last_from = max(i for i, (instr, _) in enumerate(instrs) if instr == "FROM")
    return instrs[last_from:]


def hadolint() -> str:
    path = BIN / "hadolint"
    if not path.exists():
        path = Path(shutil.which("hadolint") or "hadolint")
    return str(path)


def test_hadolint_passes_at_every_level():
    result = subprocess.run([hadolint(), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_hadolint_is_not_vacuous(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN cd /tmp && pip install requests\n")
    result = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "DL" in result.stdout


def test_final_stage_is_slim_non_root_and_runs_pylon():
    stage = final_stage()
    arg_defaults = dict(re.findall(r"^ARG (\w+)=(\S+)", DOCKERFILE.read_text(), re.M))
    base = stage[0][1].split()[0]
    base = re.sub(r"\$\{(\w+)\}", lambda m: arg_defaults[m.group(1)], base)
    assert base == "python:3.11-slim"
    body = " ".join(args for _, args in stage)
    assert "build-essential" not in body and "gcc" not in body, "build tools in the final stage"
    users = [args for instr, args in stage if instr == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert [args for instr, args in stage if instr == "ENTRYPOINT"][-1] == '["pylon"]'
    assert dockerfile_env()["PYLON_HOME"] == "/data"
    assert any(instr == "VOLUME" and "/data" in args for instr, args in stage)
    copies = [args for instr, args in stage if instr == "COPY"]
    assert copies == ["--from=builder /opt/venv /opt/venv"], "the final stage copies only the venv"
    assert any(instr == "HEALTHCHECK" for instr, _ in stage)


def test_python_version_matches_pyproject():
    import tomllib

    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11"
    assert "python:3.11" in DOCKERFILE.read_text()


def test_copied_paths_exist_and_pass_the_dockerignore():
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*", "the build context is an allow-list"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = []
    for instr, args in instructions():
        if instr == "COPY" and not args.startswith("--from"):
            *sources, _dest = args.split()
            copied += [s.rstrip("/") for s in sources]
    for src in copied:
        assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
        assert src in allowed, f"COPY {src}: excluded by .dockerignore"
    # every first-party package the distribution ships is in the image
    import tomllib

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.rstrip("*") for p in patterns}
    present = {p for p in packages if (ROOT / p / "__init__.py").exists()}
    assert present <= set(copied), f"packages not copied into the image: {present - set(copied)}"


# --------------------------------------------------------------- strfry.conf
def test_strfry_conf_binds_all_interfaces_without_auth():
    conf = (DOCKER / "strfry.conf").read_text()
    relay = conf[conf.index("relay {"):]
    assert re.search(r'^\s*bind = "0\.0\.0\.0"', relay, re.M)
    assert re.search(r"^\s*port = 7777", relay, re.M)
    auth = relay[relay.index("auth {"):relay.index("}", relay.index("auth {"))]
    assert re.search(r"enabled = false", auth)
    assert conf.count("{") == conf.count("}")
    db = re.search(r'^db = "([^"]+)"', conf, re.M).group(1)
    strfry = interpolated()["services"]["strfry"]
    assert "./strfry.conf:/etc/strfry.conf:ro" in strfry["volumes"]
    assert f"strfry-db:{db.rstrip('/')}" in strfry["volumes"]


def test_test_relay_switch_is_documented():
    for doc in (DOCKER / "README.md", ROOT / "README.md"):
        text = doc.read_text()
        assert "PYLON_TEST_RELAY=ws://127.0.0.1:7777" in text, doc
        assert "--profile relay up" in text, doc


# --------------------------------------------------------------- running for money (issue 18)
def test_provider_profile_requires_a_price_and_a_wallet():
    """No silent free provider, no play-money wallet by default: compose refuses to start without them."""
    for missing in ("PYLON_PRICE_MSAT", "PYLON_WALLET"):
        env = {k: v for k, v in REQUIRED.items() if k != missing}
        with pytest.raises(AssertionError, match=missing):
            interpolate(load_compose(), env)
    provider = interpolated()["services"]["provider"]
    assert provider["stop_grace_period"] == "45s"  # longer than the 30 s drain
    assert provider["environment"]["PYLON_DRAIN_TIMEOUT_S"] == "30"


def test_vllm_gpu_and_model_variables():
    doc = interpolated({"VLLM_TENSOR_PARALLEL_SIZE": "4", "VLLM_GPU_IDS": "0,1,2,3", "VLLM_SERVED_MODEL_NAME": "m",
                        "VLLM_EXTRA_ARGS": "--quantization awq --enable-prefix-caching"})
    vllm = doc["services"]["vllm"]
    argv = shlex.split(vllm["command"])
    assert argv[argv.index("--tensor-parallel-size") + 1] == "4" and argv[argv.index("--served-model-name") + 1] == "m"
    assert argv[-3:] == ["--quantization", "awq", "--enable-prefix-caching"]
    assert vllm["environment"]["NVIDIA_VISIBLE_DEVICES"] == "0,1,2,3"
    assert shlex.split(interpolated()["services"]["vllm"]["command"])[-1] != ""  # no empty argument by default


def test_prometheus_scrapes_pylon_and_vllm_and_the_dashboard_names_real_metrics():
    prom = YAML(typ="safe").load((DOCKER / "monitoring" / "prometheus.yml").read_text())
    targets = {t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert {"provider:9100", "vllm:8000", "nexus:9101"} <= targets
    dashboard = json.loads((DOCKER / "monitoring" / "grafana" / "dashboards" / "pylon-provider.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    from pylon.ops.metrics import ProviderMetrics

    class _Provider:  # just enough state for the scrape-time collectors
        in_flight, pool, store, db_path, keys, free, accepting, announcing = 0, None, None, None, None, True, True, False
        backend_health = None

    metrics = ProviderMetrics()
    metrics.track_provider(_Provider())
    exposed = metrics.render().decode()
    names = set(re.findall(r"pylon_provider_[a-z_]+", exprs))
    assert names, "the dashboard queries no Pylon metric"
    for name in names:
        base = re.sub(r"_(bucket|count|sum)$", "", name)
        assert re.search(rf"^# TYPE {base} ", exposed, re.M) or base in exposed, f"dashboard uses unknown {name}"


def test_systemd_unit_drains_and_reloads():
    unit = (ROOT / "deploy" / "systemd" / "pylon-serve.service").read_text()
    assert "ExecStart=" in unit and "pylon serve" in unit
    assert "KillSignal=SIGTERM" in unit and "ExecReload=/bin/kill -HUP $MAINPID" in unit
    timeout = int(re.search(r"TimeoutStopSec=(\d+)", unit).group(1))
    assert timeout > 30  # longer than the default drain
