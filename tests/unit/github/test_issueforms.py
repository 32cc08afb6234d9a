"""Issue form bodies back into store entries; the shipped template and the parser agree."""

from __future__ import annotations

from pathlib import Path

import yaml

from webhook.github import issueforms

ROOT = Path(__file__).resolve().parents[3]
TEMPLATE = ROOT / ".github" / "ISSUE_TEMPLATE" / "new-store.yml"

# What GitHub renders for a submitted form: "### <label>", a blank line, the answer.
BODY = """### Store ID

acme-outdoor

### Store name

Acme Outdoor Gear

### Engine

woocommerce

### Plan

small

### Cluster

local

### Owner name

Jane Doe

### Owner email

jane@acme-outdoor.example

### Owner GitHub login

_No response_

### Custom domain

shop.acme.example
"""


def test_sections_read_every_answer_and_no_response_is_empty() -> None:
    found = issueforms.sections(BODY.replace("\n", "\r\n"))
    assert found["Store ID"] == "acme-outdoor"
    assert found["Owner GitHub login"] == ""
    assert found["Custom domain"] == "shop.acme.example"
    assert len(found) == 9


def test_parse_maps_labels_to_store_fields() -> None:
    parsed = issueforms.parse(BODY, where="issue #3")
    assert parsed.problems == []
    assert parsed.data == {"id": "acme-outdoor", "name": "Acme Outdoor Gear", "engine": "woocommerce",
                           "plan": "small", "cluster": "local", "domain": "shop.acme.example",
                           "owner": {"name": "Jane Doe", "email": "jane@acme-outdoor.example"}}


def test_a_body_without_form_fields_is_a_problem() -> None:
    parsed = issueforms.parse("Please make me a store!", where="issue #9")
    assert [str(p) for p in parsed.problems] == [
        "issue #9: the issue has no form fields (### headings); open it with the 'New store' issue form"]


def test_multi_line_answers_for_one_line_fields_are_problems() -> None:
    parsed = issueforms.parse(BODY.replace("acme-outdoor\n\n### Store name", "acme\noutdoor\n\n### Store name"),
                              where="issue #4")
    assert [(p.field, p.message) for p in parsed.problems] == [("id", "'Store ID' must be one line")]


def test_render_then_parse_round_trips() -> None:
    answers = {"Store ID": "b", "Store name": "B", "Engine": "medusa", "Plan": "large", "Cluster": "prod",
               "Owner name": "Bo", "Owner email": "bo@b.example"}
    parsed = issueforms.parse(issueforms.render(answers), where="issue #1")
    assert parsed.data["owner"] == {"name": "Bo", "email": "bo@b.example"}
    assert "domain" not in parsed.data


def test_template_labels_are_the_ones_the_parser_knows() -> None:
    template = yaml.safe_load(TEMPLATE.read_text())
    fields = [item for item in template["body"] if item["type"] != "markdown"]
    assert [f["attributes"]["label"] for f in fields] == list(issueforms.LABELS)
    assert issueforms.ISSUE_LABEL in template["labels"]


def test_template_choices_and_required_fields_follow_the_store_schema() -> None:
    import json

    schema = json.loads((ROOT / "generator" / "schemas" / "store.schema.json").read_text())
    template = yaml.safe_load(TEMPLATE.read_text())
    by_label = {f["attributes"]["label"]: f for f in template["body"] if f["type"] != "markdown"}
    for label, field in issueforms.LABELS.items():
        head, _, rest = field.partition(".")
        prop = schema["properties"][head]
        required = head in schema["required"] and (not rest or rest in prop["required"])
        if rest:
            prop = prop["properties"][rest]
        assert by_label[label]["validations"]["required"] is required, label
        if "enum" in prop:
            assert by_label[label]["attributes"]["options"] == prop["enum"], label
