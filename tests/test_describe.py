"""Tests of escalation_rules.describe: the neutral description used by show and the docs."""

from __future__ import annotations

import json

from escalation_rules import compile_protocol, load_protocol
from escalation_rules.describe import protocol_summary, protocol_text


def test_summary_is_json_and_lists_every_rule_with_its_clause():
    """The summary serialises to JSON and carries every rule with clause and paraphrase."""
    compiled = compile_protocol(load_protocol("spec/nct07117175"))
    summary = json.loads(json.dumps(protocol_summary(compiled)))
    rules = [r for s in summary["stages"] for r in s["rules"]]
    assert len(rules) == sum(len(s.rules) for s in compiled.protocol.stages)
    assert all(r["clause"] and r["paraphrase"] for r in rules)
    assert summary["doses"][3]["provisional"] is True


def test_text_shows_windows_signoffs_and_graph_size():
    """The text form shows DLT windows, sign-offs and the graph's size."""
    text = protocol_text(compile_protocol(load_protocol("spec/nct07117175")))
    assert "DLT window 14-28 days" in text
    assert "DLT window 28 days" in text
    assert "[sign: investigator, sponsor]" in text
    assert "state graph:" in text
