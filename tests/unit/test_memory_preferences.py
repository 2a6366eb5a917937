"""Preference extraction from user turns, measured on a labelled set: what it finds and what it leaves alone."""

from __future__ import annotations

from memory.preferences import extract
from memory.recording import run_summary

# (utterance, expected preference texts). Questions, requests and chatter state no preference.
LABELLED: list[tuple[str, list[str]]] = [
    ("My default Jira project is ENG.", ["The user's default Jira project is ENG."]),
    ("my default project is OPS", ["The user's default Jira project is OPS."]),
    ("Use PLAT as my default project from now on", ["The user's default Jira project is PLAT."]),
    ("I'm on a ThinkPad and my VPN keeps dropping, open a ticket", ["The user's computer is a ThinkPad."]),
    ("I use a MacBook Pro", ["The user's computer is a MacBook Pro."]),
    ("I'm on Windows 11, if that matters.", ["The user's computer runs Windows 11."]),
    ("my laptop is a Dell XPS 13", ["The user's computer is a Dell XPS 13."]),
    ("My phone is an iPhone 15.", ["The user's phone is an iPhone 15."]),
    ("Please call me Sam.", ["The user prefers to be called Sam."]),
    ("I'm on the Platform team.", ["The user is on the Platform team."]),
    ("My timezone is Europe/Berlin", ["The user's timezone is Europe/Berlin."]),
    ("I'm in the PST time zone so schedule after 9", ["The user's timezone is PST."]),
    ("I prefer Slack over email for updates.", ["The user prefers Slack over email for updates."]),
    ("I'd prefer to be contacted on Teams", ["The user prefers to be contacted on Teams."]),
    ("Always cc my manager on new incidents.",
     ["The user wants the agent to always cc the user's manager on new incidents."]),
    ("Never close tickets without asking me",
     ["The user wants the agent to never close tickets without asking the user."]),
    ("Remember that my badge number is 4411.", ["The user's badge number is 4411."]),
    ("My default assignment group is Network Operations.",
     ["The user's default ServiceNow assignment group is Network Operations."]),
    ("I'm based in Lisbon.", ["The user's office is in Lisbon."]),
    ("My default Jira project is ENG. Also I'm on a ThinkPad.",
     ["The user's default Jira project is ENG.", "The user's computer is a ThinkPad."]),
    ("What is my default project?", []),
    ("Is my laptop a ThinkPad?", []),
    ("Who is my manager?", []),
    ("I'm on a call right now, reset my password", []),
    ("I have a meeting at 3, can you move it?", []),
    ("open a ticket: my laptop is broken", []),
    ("file a bug in my project about the login page", []),
    ("thanks, that worked", []),
    ("I'm working on the Q3 forecast, show my pipeline", []),
    ("Can you check whether I am on the Platform team?", []),
]


def test_extraction_precision_and_recall_on_labelled_utterances() -> None:
    expected = found = correct = 0
    wrong: list[str] = []
    for utterance, want in LABELLED:
        got = [p.text for p in extract(utterance)]
        expected += len(want)
        found += len(got)
        correct += len(set(got) & set(want))
        if sorted(got) != sorted(want):
            wrong.append(f"{utterance!r}: {got}")
    precision, recall = correct / found, correct / expected
    print(f"preference extraction on {len(LABELLED)} utterances: precision {precision:.0%}, recall {recall:.0%}")
    assert precision >= 0.9 and recall >= 0.9, wrong


def test_one_preference_per_subject_so_the_latest_replaces_the_earlier() -> None:
    first, second = extract("My default Jira project is ENG"), extract("my default project is OPS")
    assert first[0].subject == second[0].subject == "default.jira.project"
    assert extract("I'm on a ThinkPad")[0].subject != extract("my phone is a Pixel 8")[0].subject


def test_run_summary_is_one_short_line() -> None:
    line = run_summary("my VPN keeps dropping, open a ticket and tell me who my manager is " * 5,
                       ["servicenow.create_incident", "okta.get_user", "okta.get_user"],
                       ["created INC0010042", "manager is Carol Diaz", "x", "y"], "answered")
    assert "\n" not in line and len(line) < 400
    assert line.count("okta.get_user") == 1 and "created INC0010042" in line and "; y" not in line
    assert run_summary("who am I?", [], [], "no_action") == 'Asked "who am I?"; no action.'
