"""The launchd deployment: the plist template, `deploy/install.py`, and the service run as launchd runs it."""

from __future__ import annotations

import importlib.util
import os
import plistlib
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import httpx
import psutil
import pytest

from fleet_server import ROOT, alive, free_port, wait_gone, write_config

DEPLOY = ROOT / "deploy"
TEMPLATE = DEPLOY / "com.mlx-fleet.server.plist.template"
INSTALL = DEPLOY / "install.py"
LABEL = "com.mlx-fleet.server"
# serve lets uvicorn drain for this long after SIGTERM before it stops the supervisor (cli.py).
UVICORN_DRAIN_SECONDS = 20
VENV = Path(sys.executable).parent.parent  # not resolved: bin/python is a symlink out of the venv
MLX_FLEET = Path(sys.executable).parent / "mlx-fleet"


def _load_install() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mlx_fleet_deploy_install", INSTALL)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


install = _load_install()


def sample_values(tmp_path: Path) -> dict[str, str]:
    return {
        "MLX_FLEET": "/Users/me/mlx-fleet/.venv/bin/mlx-fleet",
        "CONFIG": "/Users/me/fleet.toml",
        "WORKDIR": "/Users/me",
        "LOG_DIR": str(tmp_path / "logs"),
        "PATH": "/Users/me/mlx-fleet/.venv/bin:/usr/bin:/bin:/usr/sbin:/sbin",
    }


def test_template_renders_to_the_service_we_want(tmp_path: Path) -> None:
    values = sample_values(tmp_path)
    plist = plistlib.loads(install.render(TEMPLATE.read_text(), values).encode())

    assert plist["Label"] == LABEL
    assert plist["ProgramArguments"] == [values["MLX_FLEET"], "serve", "--config", values["CONFIG"]]
    assert plist["RunAtLoad"] is True
    # Restart after a crash, not after a clean stop (serve exits 0 after SIGTERM).
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["ThrottleInterval"] == 10
    assert plist["ExitTimeOut"] >= 30 and plist["ExitTimeOut"] > UVICORN_DRAIN_SECONDS
    assert plist["WorkingDirectory"] == values["WORKDIR"]
    log_dir = Path(values["LOG_DIR"])
    assert Path(plist["StandardOutPath"]) == log_dir / "mlx-fleet.out.log"
    assert Path(plist["StandardErrorPath"]) == log_dir / "mlx-fleet.err.log"
    assert plist["EnvironmentVariables"] == {"PATH": values["PATH"], "PYTHONUNBUFFERED": "1"}
    assert plist["ProcessType"] == "Interactive"
    assert plist["SoftResourceLimits"]["NumberOfFiles"] >= 4096
    assert plist["HardResourceLimits"]["NumberOfFiles"] >= plist["SoftResourceLimits"]["NumberOfFiles"]


def test_template_uses_exactly_the_documented_placeholders() -> None:
    assert set(re.findall(r"\{\{(\w+)\}\}", TEMPLATE.read_text())) == set(install.PLACEHOLDERS)


def test_values_are_xml_escaped(tmp_path: Path) -> None:
    values = {**sample_values(tmp_path), "CONFIG": "/Users/me/R&D <fleet>/fleet.toml"}
    plist = plistlib.loads(install.render(TEMPLATE.read_text(), values).encode())
    assert plist["ProgramArguments"][-1] == "/Users/me/R&D <fleet>/fleet.toml"


def test_unfilled_placeholder_is_refused(tmp_path: Path) -> None:
    values = sample_values(tmp_path)
    del values["CONFIG"]
    with pytest.raises(install.InstallError, match=r"\{\{CONFIG\}\}"):
        install.render(TEMPLATE.read_text(), values)
    with pytest.raises(install.InstallError, match=r"\{\{LOG_DIR\}\}"):
        install.render(TEMPLATE.read_text(), {**sample_values(tmp_path), "LOG_DIR": ""})


def test_unknown_or_malformed_placeholders_are_refused(tmp_path: Path) -> None:
    with pytest.raises(install.InstallError, match=r"\{\{CONFIGG\}\}"):
        install.render(TEMPLATE.read_text(), {**sample_values(tmp_path), "CONFIGG": "/x"})
    with pytest.raises(install.InstallError, match="malformed"):
        install.render("<string>{{ CONFIG }}</string>{{CONFIG}}", {"CONFIG": "/x"})
    with pytest.raises(install.InstallError, match="control"):
        install.render("<string>{{CONFIG}}</string>", {"CONFIG": "/x\n/y"})


def test_build_values_makes_every_path_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_config(tmp_path / "fleet.toml", {"tiny": "/nonexistent"})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    values = install.build_values(Path("fleet.toml"), VENV, Path("~/Library/Logs/mlx-fleet"))
    assert values["MLX_FLEET"] == str(MLX_FLEET)
    assert values["CONFIG"] == str(config.resolve())
    assert values["WORKDIR"] == str(config.resolve().parent)
    assert values["LOG_DIR"] == str(tmp_path / "Library" / "Logs" / "mlx-fleet")
    assert values["PATH"].split(":")[0] == str(VENV.resolve() / "bin")
    assert all(Path(values[k]).is_absolute() for k in ("MLX_FLEET", "CONFIG", "WORKDIR", "LOG_DIR"))
    with pytest.raises(install.InstallError, match="--config"):
        install.build_values(tmp_path / "missing.toml", VENV)
    with pytest.raises(install.InstallError, match="--venv"):
        install.build_values(config, tmp_path)


def _run_install(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(INSTALL), *args], capture_output=True, text=True, timeout=60)


def test_install_print_writes_a_valid_plist_to_stdout_and_nothing_else(tmp_path: Path) -> None:
    config = write_config(tmp_path / "fleet.toml", {"tiny": "/nonexistent"})
    out, logs = tmp_path / "agents" / f"{LABEL}.plist", tmp_path / "logs"
    result = _run_install("--config", str(config), "--venv", str(VENV), "--out", str(out),
                          "--log-dir", str(logs), "--print")
    assert result.returncode == 0, result.stderr
    plist = plistlib.loads(result.stdout.encode())
    assert plist["Label"] == LABEL
    assert plist["ProgramArguments"] == [str(MLX_FLEET), "serve", "--config", str(config.resolve())]
    assert plist["StandardErrorPath"] == str(logs / "mlx-fleet.err.log")
    assert not out.exists() and not logs.exists()


def test_install_writes_the_plist_and_prints_the_launchctl_commands(tmp_path: Path) -> None:
    config = write_config(tmp_path / "fleet.toml", {"tiny": "/nonexistent"})
    out, logs = tmp_path / "agents" / f"{LABEL}.plist", tmp_path / "logs"
    result = _run_install("--config", str(config), "--venv", str(VENV), "--out", str(out), "--log-dir", str(logs))
    assert result.returncode == 0, result.stderr
    plist = plistlib.loads(out.read_bytes())
    assert plist["WorkingDirectory"] == str(config.resolve().parent)
    assert logs.is_dir()
    assert out.stat().st_mode & 0o777 == 0o644  # launchd ignores group/world-writable plists
    assert f"launchctl bootstrap gui/$(id -u) {out}" in result.stdout
    assert f"launchctl kickstart -k gui/$(id -u)/{LABEL}" in result.stdout
    assert f"launchctl bootout gui/$(id -u)/{LABEL}" in result.stdout


def test_install_fails_clearly(tmp_path: Path) -> None:
    result = _run_install("--config", str(tmp_path / "missing.toml"), "--venv", str(VENV), "--print")
    assert result.returncode == 2 and "--config" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(sys.platform == "darwin", reason="checks the refusal off macOS")
def test_install_load_refuses_off_macos(tmp_path: Path) -> None:
    config = write_config(tmp_path / "fleet.toml", {"tiny": "/nonexistent"})
    out = tmp_path / f"{LABEL}.plist"
    result = _run_install("--config", str(config), "--venv", str(VENV), "--out", str(out),
                          "--log-dir", str(tmp_path / "logs"), "--load")
    assert result.returncode == 2
    assert "macOS" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def _launchd_limits(plist: dict) -> None:
    """What launchd applies before exec: the nofile limits (capped at what we may set here)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want_hard = plist["HardResourceLimits"]["NumberOfFiles"]
    new_hard = want_hard if hard == resource.RLIM_INFINITY else min(want_hard, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(plist["SoftResourceLimits"]["NumberOfFiles"], new_hard), new_hard))


def test_the_rendered_service_runs_serves_and_stops_cleanly(tmp_path: Path, tiny_lm: Path) -> None:
    """Start the plist's job the way launchd does, use it, SIGTERM it the way launchd does."""
    port = free_port()
    config = write_config(tmp_path / "fleet.toml", {"tiny": tiny_lm},
                          extra=f'[server]\nport = {port}\nstate_dir = "{tmp_path / "state"}"\n')
    values = install.build_values(config, VENV, tmp_path / "logs")
    assert values["MLX_FLEET"] == str(MLX_FLEET)
    plist = plistlib.loads(install.render(TEMPLATE.read_text(), values).encode())

    # launchd gives the job a clean environment plus EnvironmentVariables; at least drop our overrides.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLX_FLEET_")}
    env.update(plist["EnvironmentVariables"])
    Path(values["LOG_DIR"]).mkdir(parents=True)  # install.py's job: launchd does not create it
    out_log, err_log = Path(plist["StandardOutPath"]), Path(plist["StandardErrorPath"])
    base = f"http://127.0.0.1:{port}"
    with open(out_log, "ab") as stdout, open(err_log, "ab") as stderr:
        proc = subprocess.Popen(plist["ProgramArguments"], cwd=plist["WorkingDirectory"], env=env,
                                stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                start_new_session=True, preexec_fn=lambda: _launchd_limits(plist))
    tree: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"serve exited with {proc.returncode}:\n{err_log.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"serve not healthy in 60 s:\n{err_log.read_text()[-4000:]}"
            try:
                if httpx.get(f"{base}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        assert psutil.Process(proc.pid).rlimit(psutil.RLIMIT_NOFILE)[0] > 256

        response = httpx.post(f"{base}/v1/chat/completions", timeout=60, json={
            "model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4})
        assert response.status_code == 200, response.text
        choices = response.json()["choices"]
        assert isinstance(choices, list) and len(choices) == 1

        tree = psutil.Process(proc.pid).children(recursive=True)
        assert len(tree) >= 2, f"expected the supervisor and a worker under serve, got {tree}"

        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)  # launchctl bootout / kickstart -k / logout
        returncode = proc.wait(timeout=plist["ExitTimeOut"])
        left = wait_gone(tree, timeout=max(0.0, plist["ExitTimeOut"] - (time.monotonic() - started)))
        assert not left, f"still running after serve exited: {left}"
        assert returncode == 0, f"serve exited with {returncode}:\n{err_log.read_text()[-4000:]}"
        assert err_log.stat().st_size > 0  # logging reaches StandardErrorPath
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for p in alive(tree):
            p.kill()
