"""The gateway's CLI as a subprocess against the mesh: `ask --json`, `eval`, `chat` and `keys`."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from connectors.cli import reset_all
from tests.e2e.conftest import Mesh

CASES = Path(__file__).resolve().parents[3] / "shared" / "eval" / "planner-public.jsonl"
REQUIRED = {"accepted": {"request_id"}, "plan": {"steps"},
            "step": {"id", "tool", "args", "effect", "status", "error"}, "final": {"outcome", "text"}}


async def agentmesh(mesh: Mesh, *args: str, stdin: str = "") -> tuple[int, str, str]:
    env = {**os.environ, "AGENTMESH_STATE_DIR": str(mesh.state_dir)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mesh.cli", *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 120)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_ask_json_prints_exactly_the_readme_schema(mesh: Mesh) -> None:
    await reset_all(mesh.endpoints["sandbox_admin"])
    code, out, err = await agentmesh(mesh, "ask", "--tenant", "acme", "--user", "erin.walsh@acme.example", "--json",
                                     "--yes", "Add Alice to the Salesforce-Users group")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]  # nothing but JSON on standard output
    types = [line["type"] for line in lines]
    assert types[0] == "accepted" and types[-1] == "final" and types.count("final") == 1
    assert set(types) <= set(REQUIRED)
    for line in lines:
        assert REQUIRED[line["type"]] <= set(line), line
    step = next(line for line in lines if line["type"] == "step")
    assert step == {**step, "tool": "okta.add_user_to_group", "effect": "WRITE", "status": "ok", "error": None}
    assert step["args"]["user"] == "alice.nguyen@acme.example" and step["args"]["group"] == "Salesforce-Users"
    assert lines[-1]["outcome"] == "answered"


async def test_ask_without_yes_declines_when_nobody_can_answer(mesh: Mesh) -> None:
    await reset_all(mesh.endpoints["sandbox_admin"])
    code, out, _ = await agentmesh(mesh, "ask", "--tenant", "acme", "--user", "erin.walsh@acme.example", "--json",
                                   "Reset Frank's MFA")
    lines = [json.loads(line) for line in out.splitlines()]
    step = next(line for line in lines if line["type"] == "step")
    assert code == 0 and step["status"] == "skipped" and step["error"] == "CONFIRMATION_DECLINED"
    assert lines[-1]["outcome"] == "no_action"


async def test_ask_with_an_unknown_user_still_ends_with_a_failed_final(mesh: Mesh) -> None:
    code, out, _ = await agentmesh(mesh, "ask", "--tenant", "acme", "--user", "ghost@acme.example", "--json",
                                   "Who is my manager?")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and [line["type"] for line in lines] == ["final"]
    assert lines[0]["outcome"] == "failed" and "PRINCIPAL_INVALID" in lines[0]["text"]


async def test_eval_prints_each_verdict_and_ends_with_the_tally(mesh: Mesh) -> None:
    code, out, err = await agentmesh(mesh, "eval", "--cases", str(CASES), "--only", "pub-01", "pub-07", "pub-20")
    lines = out.strip().splitlines()
    assert code == 0, out + err
    assert [line.split()[0] for line in lines[:3]] == ["PASS", "PASS", "PASS"]
    assert lines[-1] == "3 passed, 0 failed"


async def test_chat_answers_piped_requests_in_one_session(mesh: Mesh) -> None:
    await reset_all(mesh.endpoints["sandbox_admin"])
    code, out, err = await agentmesh(mesh, "chat", stdin="Who is my manager?\nWhat groups am I in?\nexit\n")
    assert code == 0, err
    assert "alice.nguyen@acme.example in acme" in out and "Carol Diaz" in out and "VPN-Users" in out
    assert out.count("[answered") == 2


async def test_keys_are_created_listed_used_and_revoked(mesh: Mesh) -> None:
    code, out, err = await agentmesh(mesh, "keys", "create", "--tenant", "globex", "--assert-users",
                                     "--description", "cli test")
    assert code == 0, err
    key = out.strip()
    key_id = key.split(".")[2]
    assert key.startswith("amk.globex.") and key_id in err and key not in err
    code, listing, _ = await agentmesh(mesh, "keys", "list", "--tenant", "globex")
    assert code == 0 and any(line.startswith(key_id) and "active" in line for line in listing.splitlines())
    async with mesh.client(api_key=key) as c:
        turn = await c.turn("What groups am I in?", user="judy.chen@globex.example")
    assert turn.failure is None
    code, _, _ = await agentmesh(mesh, "keys", "revoke", "--tenant", "globex", "--key-id", key_id)
    assert code == 0
    code, listing, _ = await agentmesh(mesh, "keys", "list", "--tenant", "globex")
    assert any(line.startswith(key_id) and "revoked" in line for line in listing.splitlines())
