"""Static checks of tofu/ (no tofu binary is available here): every file parses with python-hcl2,
every variable used is declared (and every declared one used), module calls match their
modules, every provider is pinned, and no credential is written in any file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import hcl2
import pytest

ROOT = Path(__file__).resolve().parents[2]
TOFU = ROOT / "tofu"
CREDENTIAL_NAME = re.compile(r"(token|secret|password|api_key|access_key)", re.I)
PINNED_MAJOR = re.compile(r"^~>\s*\d+\.\d+(\.\d+)?$")


def unquote(name: str) -> str:
    return name[1:-1] if len(name) >= 2 and name[0] == name[-1] == '"' else name


def parse_dir(directory: Path) -> dict[str, list[Any]]:
    """All blocks of the .tf files of one module directory, by block type."""
    blocks: dict[str, list[Any]] = {}
    for path in sorted(directory.glob("*.tf")):
        with path.open(encoding="utf-8") as fh:
            data = hcl2.load(fh)
        for key, value in data.items():
            if not key.startswith("__"):
                blocks.setdefault(key, []).extend(value)
    return blocks


def named(blocks: list[Any]) -> dict[str, dict[str, Any]]:
    """``[{'"name"': {...}}, ...]`` -> ``{name: {...}}``."""
    out: dict[str, dict[str, Any]] = {}
    for block in blocks:
        for name, body in block.items():
            out[unquote(name)] = body
    return out


def expressions(node: Any) -> list[str]:
    """Every interpolated expression (``${...}``) anywhere under ``node``."""
    if isinstance(node, str):
        return [node] if "${" in node else []
    if isinstance(node, dict):
        return [e for k, v in node.items() if not k.startswith("__") for e in expressions(v)]
    if isinstance(node, list):
        return [e for v in node for e in expressions(v)]
    return []


def literal_strings(node: Any, key: str = "") -> list[tuple[str, str]]:
    """(attribute, value) of every plain string literal under ``node``."""
    if isinstance(node, str):
        return [(key, unquote(node))] if "${" not in node else []
    if isinstance(node, dict):
        return [p for k, v in node.items() if not k.startswith("__") for p in literal_strings(v, k)]
    if isinstance(node, list):
        return [p for v in node for p in literal_strings(v, key)]
    return []


def module_dirs(root: Path = TOFU) -> list[Path]:
    return [root, *sorted(p for p in (root / "modules").iterdir() if p.is_dir())]


def problems_of(directory: Path) -> list[str]:
    """Everything wrong with one module directory, as text."""
    problems: list[str] = []
    blocks = parse_dir(directory)
    variables = named(blocks.get("variable", []))
    uses = " ".join(expressions({k: v for k, v in blocks.items() if k != "variable"}))
    # validation blocks inside variables may use their own variable
    uses += " " + " ".join(expressions(blocks.get("variable", [])))
    used = set(re.findall(r"\bvar\.([A-Za-z_][\w-]*)", uses))
    for name in sorted(used - set(variables)):
        problems.append(f"{directory.name}: var.{name} is used but not declared")
    for name in sorted(set(variables) - used):
        problems.append(f"{directory.name}: variable {name} is declared but never used")

    locals_declared = {k for b in blocks.get("locals", []) for k in b if not k.startswith("__")}
    for name in sorted(set(re.findall(r"\blocal\.(\w+)", uses)) - locals_declared):
        problems.append(f"{directory.name}: local.{name} is used but not declared")

    # providers: every resource/data type's provider is pinned in required_providers
    required: dict[str, dict[str, Any]] = {}
    for tf in blocks.get("terraform", []):
        for rp in tf.get("required_providers", []):
            required.update({k: v for k, v in rp.items() if not k.startswith("__")})
    types = {unquote(t) for b in blocks.get("resource", []) + blocks.get("data", []) for t in b}
    types |= {unquote(p) + "_" for b in blocks.get("provider", []) for p in b}
    for provider in sorted({t.split("_", 1)[0] for t in types}):
        spec = required.get(provider)
        if spec is None:
            problems.append(f"{directory.name}: provider {provider} is not in required_providers")
            continue
        version = unquote(str(spec.get("version", "")))
        if not PINNED_MAJOR.match(version):
            problems.append(
                f"{directory.name}: provider {provider} version {version!r} is not pinned"
            )
        if "/" not in unquote(str(spec.get("source", ""))):
            problems.append(f"{directory.name}: provider {provider} has no source")

    # credentials: never a literal, only a sensitive variable without a default
    for kind in ("provider", "resource", "module", "data"):
        for name, value in literal_strings(blocks.get(kind, [])):
            if CREDENTIAL_NAME.search(name) and value:
                problems.append(f"{directory.name}: {kind} attribute {name} is an inline literal")
    for name, body in variables.items():
        if CREDENTIAL_NAME.search(name):
            if body.get("sensitive") is not True:
                problems.append(f"{directory.name}: variable {name} must be sensitive")
            if body.get("default") not in (None,):
                problems.append(f"{directory.name}: variable {name} must not have a default")

    # module calls: arguments match the called module's variables
    for mod_name, body in named(blocks.get("module", [])).items():
        source = unquote(body.get("source", ""))
        target = (directory / source).resolve()
        if not target.is_dir():
            problems.append(f"module {mod_name}: source {source} does not exist")
            continue
        mod_vars = named(parse_dir(target).get("variable", []))
        args = {k for k in body if not k.startswith("__")} - {
            "source",
            "version",
            "providers",
            "count",
            "for_each",
            "depends_on",
        }
        for arg in sorted(args - set(mod_vars)):
            problems.append(f"module {mod_name}: argument {arg} is not a variable of {source}")
        needed = {n for n, v in mod_vars.items() if "default" not in v}
        for arg in sorted(needed - args):
            problems.append(f"module {mod_name}: required variable {arg} is not passed")

    # module outputs referenced from here exist
    for mod_name, output in set(re.findall(r"\bmodule\.([\w-]+)\.(\w+)", uses)):
        body = named(blocks.get("module", [])).get(mod_name)
        if body is None:
            problems.append(f"module.{mod_name} is used but not declared")
            continue
        outputs = named(
            parse_dir((directory / unquote(body["source"])).resolve()).get("output", [])
        )
        if output not in outputs:
            problems.append(f"module.{mod_name}.{output} is not an output of that module")
    return problems


# -- the repository's tofu/ ---------------------------------------------------------------------


def test_every_file_parses() -> None:
    files = sorted(TOFU.rglob("*.tf")) + [TOFU / "terraform.tfvars.example"]
    assert len(files) >= 12
    for path in files:
        with path.open(encoding="utf-8") as fh:
            assert isinstance(hcl2.load(fh), dict), path


@pytest.mark.parametrize("directory", module_dirs(), ids=lambda p: p.name)
def test_module_is_consistent(directory: Path) -> None:
    assert problems_of(directory) == []


def test_layout() -> None:
    for directory in module_dirs():
        for name in ("main.tf", "variables.tf", "outputs.tf", "versions.tf"):
            assert (directory / name).is_file(), f"{directory}/{name}"
    modules = named(parse_dir(TOFU)["module"])
    assert set(modules) == {"cloudflare-dns", "r2"}


def test_cloudflare_provider_v5_and_token_from_variable() -> None:
    blocks = parse_dir(TOFU)
    (tf,) = blocks["terraform"]
    spec = tf["required_providers"][0]["cloudflare"]
    assert unquote(spec["source"]) == "cloudflare/cloudflare"
    assert unquote(spec["version"]).startswith("~> 5.")
    provider = named(blocks["provider"])["cloudflare"]
    assert provider["api_token"] == "${var.cloudflare_api_token}"
    token = named(blocks["variable"])["cloudflare_api_token"]
    assert token["sensitive"] is True and token["default"] is None


def test_no_credential_anywhere_in_the_text() -> None:
    looks_like_token = re.compile(r"[\"'=]\s*[A-Za-z0-9_-]{40}\b")
    for path in [*TOFU.rglob("*.tf"), TOFU / "terraform.tfvars.example"]:
        text = path.read_text(encoding="utf-8")
        assert not looks_like_token.search(text), path
        assert not re.search(r"(?im)^\s*\w*(token|secret|password)\w*\s*=\s*\"", text), path


def test_tfvars_example_sets_only_declared_variables() -> None:
    with (TOFU / "terraform.tfvars.example").open(encoding="utf-8") as fh:
        example = {k for k in hcl2.load(fh) if not k.startswith("__")}
    declared = set(named(parse_dir(TOFU)["variable"]))
    assert example <= declared
    required = {n for n, v in named(parse_dir(TOFU)["variable"]).items() if "default" not in v}
    assert required <= example


def test_r2_lifecycle_rules() -> None:
    resources = parse_dir(TOFU / "modules" / "r2")["resource"]
    types = [(unquote(t), unquote(n)) for b in resources for t, body in b.items() for n in body]
    assert ("cloudflare_r2_bucket", "velero") in types
    assert ("cloudflare_r2_bucket", "etcd") in types
    assert ("cloudflare_r2_bucket_lifecycle", "velero") in types
    assert ("cloudflare_r2_bucket_lifecycle", "etcd") in types
    etcd = next(
        b['"cloudflare_r2_bucket_lifecycle"']['"etcd"']
        for b in resources
        if '"cloudflare_r2_bucket_lifecycle"' in b
        and '"etcd"' in b['"cloudflare_r2_bucket_lifecycle"']
    )
    (rule,) = etcd["rules"]
    assert (
        "var.etcd_snapshot_retention_days"
        in rule["delete_objects_transition"]["condition"]["max_age"]
    )


# -- the checker itself finds problems ----------------------------------------------------------


def write(directory: Path, name: str, text: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(text, encoding="utf-8")


def test_checker_reports_undeclared_unused_unpinned_and_inline(tmp_path: Path) -> None:
    write(
        tmp_path,
        "versions.tf",
        "terraform {\n  required_providers {\n    cloudflare = {\n"
        '      source  = "cloudflare/cloudflare"\n      version = ">= 4"\n    }\n  }\n}\n'
        'provider "cloudflare" {\n  api_token = "abc-inline-token"\n}\n',
    )
    write(
        tmp_path,
        "variables.tf",
        'variable "unused" {\n  type = string\n}\n'
        'variable "api_token" {\n  type = string\n  default = "x"\n}\n',
    )
    write(
        tmp_path,
        "main.tf",
        'resource "cloudflare_dns_record" "a" {\n  zone_id = var.zone\n  name = "a"\n'
        '  type = "A"\n  content = var.api_token\n  ttl = 1\n}\n'
        'resource "random_id" "x" {\n  byte_length = 4\n}\n',
    )
    problems = "\n".join(problems_of(tmp_path))
    assert "var.zone is used but not declared" in problems
    assert "variable unused is declared but never used" in problems
    assert "provider cloudflare version '>= 4' is not pinned" in problems
    assert "provider random is not in required_providers" in problems
    assert "provider attribute api_token is an inline literal" in problems
    assert "variable api_token must be sensitive" in problems
    assert "variable api_token must not have a default" in problems


def test_checker_reports_module_mismatches(tmp_path: Path) -> None:
    write(tmp_path / "modules" / "m", "variables.tf", 'variable "needed" {\n  type = string\n}\n')
    write(tmp_path / "modules" / "m", "outputs.tf", 'output "o" {\n  value = var.needed\n}\n')
    write(
        tmp_path,
        "main.tf",
        'module "m" {\n  source = "./modules/m"\n  extra = 1\n}\n'
        'output "x" {\n  value = module.m.missing\n}\n',
    )
    problems = "\n".join(problems_of(tmp_path))
    assert "module m: argument extra is not a variable of ./modules/m" in problems
    assert "module m: required variable needed is not passed" in problems
    assert "module.m.missing is not an output of that module" in problems
