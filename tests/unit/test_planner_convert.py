"""The planner's conversion of a request's directory: reused per (tenant, people_fingerprint), never across them."""

from __future__ import annotations

from agentmesh.common.v1 import common_pb2
from agentmesh.planner.v1 import planner_service_pb2
from planner.convert import people_of


def _request(names: list[str], fingerprint: str = "") -> planner_service_pb2.PlanRequest:
    people = [common_pb2.Person(email=f"{n.lower()}@acme.example", name=f"{n} Example") for n in names]
    return planner_service_pb2.PlanRequest(request="hi", people=people, people_fingerprint=fingerprint)


def test_same_fingerprint_reuses_the_conversion() -> None:
    first = people_of(_request(["Alice", "Bob"], "fp-1"), "acme")
    again = people_of(_request(["Alice", "Bob"], "fp-1"), "acme")
    assert again is first
    assert [p.email for p in first.people] == ["alice@acme.example", "bob@acme.example"]
    assert (first.people[0].first_name, first.people[0].last_name) == ("Alice", "Example")
    assert first.resolve("Bob", "alice@acme.example") == "bob@acme.example"


def test_other_tenant_or_fingerprint_or_none_is_converted_afresh() -> None:
    acme = people_of(_request(["Alice"], "fp-2"), "acme")
    globex = people_of(_request(["Carol"], "fp-2"), "globex")
    assert [p.email for p in globex.people] == ["carol@acme.example"] and globex is not acme
    changed = people_of(_request(["Alice", "Dave"], "fp-3"), "acme")
    assert [p.email for p in changed.people] == ["alice@acme.example", "dave@acme.example"]
    plain = people_of(_request(["Erin"]), "acme")
    assert [p.email for p in plain.people] == ["erin@acme.example"]
    assert people_of(_request(["Erin"]), "acme") is not plain
