"""The README and .envrc.example stay in step with the code."""

from __future__ import annotations

import re
import shutil
import textwrap
from pathlib import Path

import pytest

from k3sfleet.settings import Settings, format_default, setting_fields

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
ROW = re.compile(r"^\| `([A-Z0-9_]+)` \| (.+?) \| (`[^`]*`|) \| (yes|no) \|$", re.M)


def readme_settings() -> dict[str, tuple[str, str, str]]:
    section = README.split("## Settings", 1)[1]
    rows = {}
    for name, meaning, default, secret in ROW.findall(section):
        assert name not in rows, f"README lists {name} twice"
        rows[name] = (meaning.strip(), default.strip("`"), secret)
    return rows


def test_every_setting_has_a_matching_readme_row() -> None:
    rows = readme_settings()
    problems = []
    for f in setting_fields():
        name = f.name.upper()
        if name not in rows:
            problems.append(f"{name}: no row in the README settings table")
            continue
        meaning, default, secret = rows[name]
        if not meaning:
            problems.append(f"{name}: the README row has no meaning")
        if default != format_default(f.default):
            problems.append(f"{name}: README default {default!r} != {format_default(f.default)!r}")
        if (secret == "yes") != bool(f.metadata["secret"]):
            problems.append(f"{name}: README secret column says {secret!r}")
    known = {f.name.upper() for f in setting_fields()}
    problems += [f"{n}: in the README but not a setting" for n in sorted(set(rows) - known)]
    assert not problems, "\n".join(problems) + "\n(see `k3sfleet config --readme-table`)"


def test_the_deploy_data_table_is_the_deploys_defaults_blocks() -> None:
    """README "Deploy data" lists each deploy's DEFAULTS block as `config --readme-table` prints
    it, and the blocks it is read from are the ones the deploys use."""
    import importlib

    from k3sfleet.settings import deploy_data_blocks, deploy_data_rows

    section = README.split("### Deploy data", 1)[1].split("\n## ", 1)[0]
    listed = [line for line in section.splitlines() if line.startswith("| ") and "`" in line]
    assert listed == deploy_data_rows(ROOT / "deploys")
    for name, block in deploy_data_blocks(ROOT / "deploys").items():
        module = importlib.import_module(f"k3sfleet.deploys.{name}")
        assert {k: v for k, v in module.DEFAULTS.items() if k in block} == block, name


def test_secret_settings_are_secret_typed() -> None:
    for f in setting_fields():
        kind = str(Settings.__annotations__[f.name])
        assert f.metadata["secret"] == ("Secret" in kind), f.name


def test_envrc_example_lists_every_setting_and_loads(tmp_path: Path) -> None:
    example = (ROOT / ".envrc.example").read_text(encoding="utf-8")
    exported = set(re.findall(r"^export ([A-Z0-9_]+)=", example, re.M))
    missing = sorted(f.name.upper() for f in setting_fields() if f.name.upper() not in exported)
    assert not missing, f".envrc.example lacks: {', '.join(missing)}"
    shutil.copy(ROOT / ".envrc.example", tmp_path / ".envrc")
    settings = Settings.load(tmp_path, {})  # every example value is valid for its type
    assert settings.sources["k3s_version"] == ".envrc"


def test_readme_opens_with_the_two_commands() -> None:
    first_block = README.split("```bash", 1)[1].split("```", 1)[0]
    commands = [ln for ln in first_block.splitlines() if ln and not ln.startswith("#")]
    assert commands == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    assert README.index("```bash") < README.index("## Layout")
    for script in ("scripts/demo.sh", "scripts/test.sh", "scripts/setup.sh"):
        assert (ROOT / script).is_file(), script
    ci = (ROOT / ".ci" / "run").read_text()
    assert "exec bash scripts/test.sh" in ci


@pytest.mark.parametrize("section", ["## Layout", "## Three ways to use it", "## Settings"])
def test_readme_sections(section: str) -> None:
    assert section in README


def test_python_examples_compile_and_their_imports_exist() -> None:
    import ast
    import importlib

    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert blocks
    for block in blocks:
        tree = ast.parse(textwrap.dedent(block))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{node.module}.{alias.name}"


def _command_lines(program: str) -> list[list[str]]:
    """Each ``program ...`` command in the README's bash blocks, split like the shell (comments,
    leading ``VAR=value`` assignments, pipes and ``&&`` removed; ``[--opt]`` taken as given)."""
    import shlex

    found = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in textwrap.dedent(block).splitlines():
            for part in re.split(r"\s*(?:&&|\|)\s*", line.split("  #", 1)[0].strip()):
                words = shlex.split(part.replace("[", "").replace("]", ""), comments=True)
                while words and re.fullmatch(r"[A-Z0-9_]+=\S*", words[0]):
                    words = words[1:]
                if words and words[0] == program:
                    found.append(words[1:])
    return found


def test_every_k3sfleet_command_in_the_readme_parses() -> None:
    from k3sfleet.cli import build_parser

    commands = _command_lines("k3sfleet")
    assert len(commands) > 20
    problems = []
    for argv in commands:
        try:
            build_parser().parse_args(argv)
        except SystemExit:
            problems.append("k3sfleet " + " ".join(argv))
    assert not problems, problems


def test_every_pyinfra_command_in_the_readme_runs_an_existing_entry_file() -> None:
    commands = _command_lines("pyinfra")
    assert len(commands) > 5
    problems = [argv for argv in commands if not (ROOT / "deploys").joinpath(
        Path(argv[1]).name).is_file() or not argv[1].startswith("deploys/")]
    assert not problems, problems


def test_every_path_of_the_layout_table_exists() -> None:
    """The first column, and the folders and files each row names inside its path."""
    section = README.split("## Layout", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([\w./-]+)` \| (.*) \|$", section, re.M)
    assert {"k3sfleet/", "tests/", "deploys/"} <= {path for path, _ in rows}
    missing = []
    for path, what in rows:
        inside = re.findall(r"`([\w-]+(?:/|\.sh|\.md))`", what)
        missing += [p for p in [path, *(path + name for name in inside)] if not (ROOT / p).exists()]
    assert not missing, missing
