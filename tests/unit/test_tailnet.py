"""k3sfleet.tailnet / `k3sfleet tailnet-policy`: the policy stanza that approves pod routes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from k3sfleet.cli import main
from k3sfleet.tailnet import policy

ROOT = Path(__file__).resolve().parents[2]


def test_owners_are_the_tags_else_members() -> None:
    assert policy("tag:k3s, tag:prod") == {
        "autoApprovers": {"routes": {"10.42.0.0/16": ["tag:k3s", "tag:prod"]}}}
    assert policy("") == {"autoApprovers": {"routes": {"10.42.0.0/16": ["autogroup:member"]}}}


def test_cli_prints_the_stanza_for_the_projects_tags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / ".envrc").write_text("export TAILSCALE_TAGS=tag:k3s\n")
    assert main(["--project-dir", str(tmp_path), "tailnet-policy"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == policy("tag:k3s")
    # the README shows exactly this stanza
    assert json.dumps(printed, indent=2) in (ROOT / "README.md").read_text()
