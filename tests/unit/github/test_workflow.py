"""The shipped workflow runs the storeops checks on pull requests that touch the inputs."""

from __future__ import annotations

from pathlib import Path

import yaml

WORKFLOW = Path(__file__).resolve().parents[3] / ".github" / "workflows" / "validate-stores.yml"


def test_workflow_runs_validate_and_check_on_pull_requests() -> None:
    document = yaml.safe_load(WORKFLOW.read_text())
    triggers = document[True] if True in document else document["on"]  # YAML 1.1 reads `on` as true
    assert {"stores/**", "clusters/**", "templates/**"} <= set(triggers["pull_request"]["paths"])
    steps = document["jobs"]["validate"]["steps"]
    commands = "\n".join(step.get("run", "") for step in steps)
    assert 'storeops validate --base "$BASE"' in commands  # an engine or cluster change is refused
    assert "storeops check" in commands
    assert any(step.get("uses", "").startswith("actions/checkout@") for step in steps)
