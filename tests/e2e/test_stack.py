"""`agentmesh up` brings the local stack up under supervision; `status` shows it SERVING; `down` stops it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mesh.stack import SERVICES


def _agentmesh(state: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AGENTMESH_STATE_DIR": str(state)}
    return subprocess.run([sys.executable, "-m", "mesh.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    state = tmp_path_factory.mktemp("stack")
    up = _agentmesh(state, "up", "--detach")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield state
    finally:
        _agentmesh(state, "down")


def test_every_present_service_is_serving(stack: Path) -> None:
    status = _agentmesh(stack, "status", "--json", timeout=60)
    rows = json.loads(status.stdout)
    present = [s.name for s in SERVICES if s.present]
    assert present, "no service modules in this checkout"
    for name in present:
        assert rows[name]["health"] == "SERVING", rows[name]
    for infra in ("redis", "postgres", "sandboxes"):
        assert rows[infra]["process"] == "RUNNING", rows[infra]
    assert status.returncode == 0
    endpoints = json.loads((stack / "endpoints.json").read_text())
    assert set(endpoints["sandboxes"]) == {"servicenow", "jira", "salesforce", "okta"}


def test_a_crashed_service_is_restarted(stack: Path) -> None:
    endpoints = json.loads((stack / "endpoints.json").read_text())
    name = next(iter(endpoints["services"]))
    pid_before = _service_pid(stack, name)
    os.kill(pid_before, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = json.loads(_agentmesh(stack, "status", "--json", timeout=60).stdout)
        pid = _service_pid(stack, name)
        if status[name]["health"] == "SERVING" and pid != pid_before:
            return
        time.sleep(0.5)
    raise AssertionError(f"{name} was not restarted")


def _service_pid(state: Path, name: str) -> int:
    from mesh.config import MeshConfig
    from mesh.stack import Stack

    info = Stack(MeshConfig(state_dir=state)).rpc().supervisor.getProcessInfo(name)
    return int(info["pid"])


def test_down_stops_everything(stack: Path) -> None:
    pid = int((stack / "supervisor" / "supervisord.pid").read_text())
    down = _agentmesh(stack, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert _agentmesh(stack, "status").returncode == 1
