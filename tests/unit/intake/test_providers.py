from __future__ import annotations

import json

import pytest

from webhook.intake.providers import tally


@pytest.mark.parametrize("options", [True, "a", 3, {"id": "x"}, None])
def test_tally_options_that_are_not_a_list_are_ignored_not_a_crash(options: object) -> None:
    """Found by the mapping property test: ``options: true`` was iterated and gave a 500."""
    body = {"eventId": "e1", "data": {"formId": "f", "fields": [
        {"key": "question_plan", "label": "Plan", "type": "MULTIPLE_CHOICE", "value": ["opt-1"], "options": options},
        {"key": "question_name", "label": "Name", "type": "INPUT_TEXT", "value": "Shop"}]}}
    delivery = tally.PROVIDER.read(headers={}, body=json.dumps(body).encode())
    assert [(a.key, a.value) for a in delivery.answers] == [("question_plan", ("opt-1",)), ("question_name", "Shop")]
