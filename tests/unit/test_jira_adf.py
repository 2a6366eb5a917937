"""Atlassian Document Format: plain text to documents and documents back to readable text."""

from __future__ import annotations

from connectors.jira import adf


def test_text_becomes_paragraphs_with_hard_breaks() -> None:
    doc = adf.to_adf("first line\nsecond line\n\nnext paragraph")
    assert doc == {"type": "doc", "version": 1, "content": [
        {"type": "paragraph", "content": [{"type": "text", "text": "first line"}, {"type": "hardBreak"},
                                          {"type": "text", "text": "second line"}]},
        {"type": "paragraph", "content": [{"type": "text", "text": "next paragraph"}]},
    ]}
    assert adf.is_document(doc) and not adf.is_document("plain") and not adf.is_document({"type": "doc"})
    assert adf.to_text(doc) == "first line\nsecond line\nnext paragraph"


def test_rich_documents_read_as_text() -> None:
    doc = {"type": "doc", "version": 1, "content": [
        {"type": "heading", "attrs": {"level": 2}, "content": [{"type": "text", "text": "Steps"}]},
        {"type": "bulletList", "content": [
            {"type": "listItem", "content": [{"type": "paragraph", "content": [
                {"type": "text", "text": "ask "}, {"type": "mention", "attrs": {"id": "5f0", "text": "@Carol"}}]}]},
            {"type": "listItem", "content": [{"type": "paragraph", "content": [
                {"type": "inlineCard", "attrs": {"url": "https://example.com/x"}}]}]},
        ]},
        {"type": "paragraph", "content": [{"type": "emoji", "attrs": {"shortName": ":tada:", "text": "🎉"}}]},
    ]}
    assert adf.to_text(doc) == "Steps\nask @Carol\nhttps://example.com/x\n🎉"
    assert adf.to_text(None) == ""
