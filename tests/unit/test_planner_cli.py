"""`agentmesh plan --local --json` prints the plan in the eval's plan-level format, without a running stack."""

from __future__ import annotations

import argparse
import json

import pytest

from planner.cli import bench_subparsers, register


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="agentmesh")
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


async def test_plan_prints_the_eval_format_and_says_where_the_tools_came_from(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.setenv("AGENTMESH_STATE_DIR", str(tmp_path))  # no endpoints file: no running stack
    args = parse(["plan", "--tenant", "acme", "--user", "Alice.Nguyen@acme.example", "--json", "--local",
                  "Find the Jira issue about the flaky checkout test and assign it to me"])
    assert await args.func(args) == 0
    out, err = capsys.readouterr()
    document = json.loads(out)
    assert set(document) == {"steps", "refusals", "question", "explanation"}
    search, assign = document["steps"]
    assert set(search) == {"id", "tool", "args", "depends_on", "effect"}
    assert (search["tool"], search["effect"], search["args"]["limit"]) == ("jira.search_issues", "READ", 10)
    assert assign["args"]["assignee"] == "alice.nguyen@acme.example" and assign["depends_on"] == [search["id"]]
    assert assign["args"]["key"].startswith("{{steps.")
    assert document["refusals"] == [] and document["question"] is None
    assert "building the tools from the manifests and policy.json" in err


async def test_plan_without_a_running_planner_asks_for_local(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.setenv("AGENTMESH_STATE_DIR", str(tmp_path))
    args = parse(["plan", "--tenant", "acme", "--user", "alice.nguyen@acme.example", "Who is my manager?"])
    assert await args.func(args) == 2
    assert "--local" in capsys.readouterr().err
    args = parse(["plan", "--tenant", "acme", "--user", "nobody@acme.example", "--local", "Who is my manager?"])
    assert await args.func(args) == 2


def test_bench_subcommands_are_shared_between_packages() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    other = bench_subparsers(sub).add_parser("gateway")
    other.set_defaults(component_name="gateway")
    register(sub)
    assert parser.parse_args(["bench", "planner", "--rounds", "1"]).rounds == 1
    assert parser.parse_args(["bench", "gateway"]).component_name == "gateway"
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "nothing"])
