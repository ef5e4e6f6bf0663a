"""The wheel: built from the tree, installed into a fresh virtualenv, it imports every module of
``k3sfleet`` (``deploys/``, ``facts/`` and ``templates/`` as ``k3sfleet.deploys`` ...) and renders
every template, all from the installed files; and a user's first day works from an empty folder
with only the install: ``k3sfleet init``, ``check``, ``deploy``, ``verify``, ``db``, ``dr``.

Offline (the test suite talks to no registry): the wheel is built without build isolation and
installed with ``--no-deps --no-index``; the third-party dependencies come from the running
environment's site-packages through a ``.pth`` file. A ``.pth`` line adds a folder without running
the ``.pth`` files inside it, so the running environment's editable k3sfleet stays invisible, and
the test checks that every k3sfleet file it loaded lies inside the new virtualenv.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import socket
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SKIP_COPY = shutil.ignore_patterns(
    ".git", ".venv", ".tools", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".lab",
    "node_modules", "tests", "benchmarks", ".envrc", ".envrc.local", ".env", "vault.yml", "*.log",
)

CHECK = r'''
import importlib, json, pkgutil, sys
from pathlib import Path

report = {"modules": {}, "import_errors": {}, "templates": {}, "render_errors": {},
          "sample_sources": {}}
samples = {}
for package in ("k3sfleet",):
    root = importlib.import_module(package)
    report["modules"][package] = root.__file__
    for info in pkgutil.walk_packages(root.__path__, prefix=package + "."):
        try:
            module = importlib.import_module(info.name)
        except Exception as e:  # reported, the test fails on it
            report["import_errors"][info.name] = f"{type(e).__name__}: {e}"
            continue
        report["modules"][info.name] = module.__file__
        for name, context in (getattr(module, "SAMPLE_CONTEXT", None) or {}).items():
            samples[name] = context
            report["sample_sources"][name] = info.name

import jinja2
import jinja2.meta
from k3sfleet import templating

report["modules"]["k3sfleet.templating"] = templating.__file__
report["templates_dir"] = str(templating.TEMPLATES_DIR)


class Sample(str):
    """A placeholder for a variable no SAMPLE_CONTEXT gives: a string that can also be
    iterated (one item), indexed, and asked for attributes or items."""

    def __new__(cls, name):
        return super().__new__(cls, f"sample-{name}")

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return Sample(name)

    def __getitem__(self, key):
        return Sample(str(key))

    def __iter__(self):
        yield Sample("item")

    def items(self):
        return [(Sample("key"), Sample("value"))]

    def keys(self):
        return [Sample("key")]

    def values(self):
        return [Sample("value")]


env = templating.environment()
for name in env.list_templates(extensions=["j2"]):
    source = (templating.TEMPLATES_DIR / name).read_text()
    try:
        if name in samples:
            context = samples[name]
        else:
            tree = env.parse(source)
            wanted = jinja2.meta.find_undeclared_variables(tree)
            # a variable may shadow a global of the same name (``namespace``) unless it is called
            loaded = {n.name for n in tree.find_all(jinja2.nodes.Name) if n.ctx == "load"}
            called = {c.node.name for c in tree.find_all(jinja2.nodes.Call)
                      if isinstance(c.node, jinja2.nodes.Name)}
            wanted |= (loaded & set(env.globals)) - called
            context = {var: Sample(var) for var in wanted}
        report["templates"][name] = env.get_template(name).render(**context)
    except Exception as e:
        report["render_errors"][name] = f"{type(e).__name__}: {e}"
json.dump(report, sys.stdout)
'''


def run(*args: str | Path, cwd: Path | None = None, code: int = 0,
        env: dict[str, str] | None = None, stderr: bool = True) -> str:
    """Run ``args``, expect exit ``code``; stdout, and stderr after it unless ``stderr=False``."""
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=600, check=False,
        env=env,
    )
    assert done.returncode == code, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout + (done.stderr if stderr else "")


def parent_site_dirs() -> list[str]:
    dirs = [*site.getsitepackages(), sysconfig.get_paths()["purelib"],
            sysconfig.get_paths()["platlib"]]
    return list(dict.fromkeys(d for d in dirs if Path(d).is_dir()))


def tree_modules() -> set[str]:
    """Every module of the tree's ``k3sfleet`` package, through the symlinked ``deploys`` ..."""
    found = set()
    for folder, _dirs, files in os.walk(ROOT / "k3sfleet", followlinks=True):
        if "__init__.py" not in files:
            continue  # not a package: skeleton/ (data)
        package = ".".join(Path(folder).relative_to(ROOT).parts)
        found |= {f"{package}.{f[:-3]}".removesuffix(".__init__") for f in files
                  if f.endswith(".py") and f != "__main__.py"}
    return found


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The wheel built from a copy of the tree, installed into a fresh venv (offline)."""
    pytest.importorskip("wheel", reason="the test extra installs wheel (bdist_wheel)")
    tmp = tmp_path_factory.mktemp("package")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=SKIP_COPY, symlinks=True)
    dist = tmp / "dist"
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
        "--no-index", "-w", dist, f"{src}{'/'}")
    [wheel] = dist.glob("k3sfleet-*.whl")
    venv = tmp / "venv"
    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel)
    purelib = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                       stderr=False).strip())
    (purelib / "_k3sfleet_test_deps.pth").write_text("\n".join(parent_site_dirs()) + "\n")
    return {"tmp": tmp, "venv": venv, "python": python, "purelib": purelib, "wheel": wheel}


@pytest.mark.package
def test_wheel_installs_imports_every_module_and_renders_every_template(
    installed: dict[str, Path],
) -> None:
    python, purelib, venv = installed["python"], installed["purelib"], installed["venv"]
    work = installed["tmp"] / "elsewhere"  # not the tree: nothing may come from the working dir
    work.mkdir()
    report = json.loads(run(python, "-I", "-c", CHECK, cwd=work, stderr=False))

    assert report["import_errors"] == {}
    assert report["render_errors"] == {}
    # every module file of the tree is in the wheel, and was loaded from the venv
    expected = tree_modules()
    assert {"k3sfleet.deploys.cluster", "k3sfleet.facts.k3s", "k3sfleet.templates"} <= expected
    assert expected <= set(report["modules"]), expected - set(report["modules"])
    outside = {m: f for m, f in report["modules"].items() if not f.startswith(str(purelib))}
    assert outside == {}, outside
    assert report["templates_dir"].startswith(str(purelib))
    # every template of the tree is shipped and renders to something
    tree_templates = sorted(
        str(p.relative_to(ROOT / "templates")) for p in (ROOT / "templates").rglob("*.j2")
    )
    assert sorted(report["templates"]) == tree_templates
    empty = [name for name, text in report["templates"].items() if not text.strip()]
    assert empty == []
    # nothing but k3sfleet at the top: a user's own deploys/facts/templates are never shadowed
    top = {p.name for p in purelib.iterdir()} & {"deploys", "facts", "templates", "tests"}
    assert top == set()

    # the console script and `python -m k3sfleet` work from the wheel
    help_text = run(venv / "bin" / "k3sfleet", "--help", cwd=work)
    assert "vault" in help_text and "config" in help_text
    assert "init" in run(python, "-m", "k3sfleet", "--help", cwd=work)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


FULL_VAULT = """vault_ansible_hosts:
  vps-aws-1: 127.0.0.1
  vps-hetzner-1: 127.0.0.1
  vps-vultr-1: 127.0.0.1
vault_ansible_users: {vps-aws-1: root, vps-hetzner-1: root, vps-vultr-1: root}
vault_tailscale_auth_key: tskey-auth-test
vault_example_app_db_password: never-printed
"""


@pytest.mark.package
def test_first_day_from_an_empty_folder_with_only_the_install(
    installed: dict[str, Path],
) -> None:
    venv, python, purelib = installed["venv"], installed["python"], installed["purelib"]
    k3sfleet = venv / "bin" / "k3sfleet"
    project = installed["tmp"] / "my-cluster"
    project.mkdir()
    (project / "pw").write_text("first-day-password\n")
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(installed["tmp"]),
           "K3SFLEET_KNOWN_HOSTS": str(installed["tmp"] / "known_hosts")}

    # init: the user's files and an encrypted vault; the password file recorded in .envrc
    out = run(k3sfleet, "init", "--vault-password-file", "pw", cwd=project, env=env)
    for name in ("inventory.py", ".envrc.example", ".gitignore", "helm/apps/values.yaml",
                 "helm/infrastructure/values.yaml", "deploys/secrets.py", "vault.yml"):
        assert (project / name).is_file(), (name, out)
    assert (project / "vault.yml").read_text().startswith("$ANSIBLE_VAULT;1.1;AES256")
    assert oct((project / "vault.yml").stat().st_mode & 0o777) == "0o600"
    assert 'K3SFLEET_VAULT_PASSWORD_FILE="pw"' in (project / ".envrc").read_text()
    run(k3sfleet, "init", cwd=project, env=env, code=3)  # refuses to overwrite
    # the user's own top-level deploys package is theirs, not shadowed by the install
    (project / "deploys" / "common.py").write_text("MINE = True\n")
    run(python, "-c", "import deploys.common; assert deploys.common.MINE", cwd=project, env=env)

    # check: every pre-contact problem of the skeleton, exit 3, nothing contacted
    out = run(k3sfleet, "check", "bootstrap", cwd=project, env=env, code=3)
    assert "node vps-aws-1 has no address in vault vault_ansible_hosts" in out
    assert "TAILSCALE_AUTH_KEY is not set (needed by deploys/bootstrap.py)" in out
    # the same through pyinfra on the installed entry file
    out = run(k3sfleet, "deploy", "bootstrap", "--dry", cwd=project, env=env, code=1)
    assert "TAILSCALE_AUTH_KEY is not set (needed by deploys/bootstrap.py)" in out
    assert "no host was contacted" in out
    path = run(k3sfleet, "deploy", "--print-path", "bootstrap", cwd=project, env=env,
               stderr=False).strip()
    assert path == str(purelib / "k3sfleet" / "deploys" / "bootstrap.py")
    own = run(k3sfleet, "deploy", "--print-path", "secrets", cwd=project, env=env,
              stderr=False).strip()
    assert own == str((project / "deploys" / "secrets.py").resolve())
    # the installed entry files, one line each; the project's copy of secrets.py runs against
    # the installed building block it calls (deploys/cluster_secrets.py)
    listed = run(k3sfleet, "deploy", "--list", cwd=project, env=env, stderr=False).splitlines()
    assert [line.split()[0] for line in listed] == [
        "argocd", "bootstrap", "cluster", "databases", "init_cluster", "maintenance", "reset",
        "secrets", "upgrade"]
    assert "Bring up or converge the whole K3s cluster in one run." in "\n".join(listed)
    out = run(k3sfleet, "check", "secrets", cwd=project, env=env, code=3)
    assert "CLOUDFLARE_API_TOKEN" in out and "(needed by deploys/secrets.py)" in out

    # fill the vault as a user would (their editor), then check passes
    editor = installed["tmp"] / "editor.sh"
    (installed["tmp"] / "vault.txt").write_text(FULL_VAULT)
    editor.write_text(f'#!/bin/sh\ncp {installed["tmp"] / "vault.txt"} "$1"\n')
    editor.chmod(0o755)
    run(k3sfleet, "vault", "edit", cwd=project, env={**env, "EDITOR": str(editor)})
    port = _free_port()
    inventory = (project / "inventory.py").read_text()
    (project / "inventory.py").write_text(
        inventory.replace('provider="aws")', f'provider="aws", ssh_port={port})')
        .replace('provider="vultr")', f'provider="vultr", ssh_port={port})')
        .replace('provider="hetzner",', f'provider="hetzner", ssh_port={port},')
    )
    assert "no problems, 3 host(s)" in run(k3sfleet, "check", "bootstrap", cwd=project, env=env)
    out = run(k3sfleet, "config", cwd=project, env=env)
    assert f"{'vault file':34} vault.yml (read)" in out and "never-printed" not in out
    # past every pre-contact check, pyinfra tries to connect (to a closed loopback port)
    out = run(k3sfleet, "deploy", "bootstrap", "--dry", cwd=project, env=env, code=1)
    assert "configuration problem" not in out and "127.0.0.1" in out

    # verify: the shipped suite, collected against the project's inventory
    out = run(k3sfleet, "verify", "--", "--collect-only", "-q", cwd=project, env=env)
    assert "test_ssh.py" in out and "vps-aws-1" in out
    assert not (purelib / "k3sfleet" / "verify_suite" / ".pytest_cache").exists()

    # db and dr: the project's copy of the chart values, else the packaged defaults
    values = project / "helm" / "apps" / "values.yaml"
    values.write_text(values.read_text().replace("name: example-app", "name: my-app")
                      .replace("templates/example-app", "templates/my-app"))
    (project / "helm/apps/templates/example-app.yaml").rename(
        project / "helm/apps/templates/my-app.yaml")
    assert "my-app" in run(k3sfleet, "db", "list", cwd=project, env=env)
    shutil.rmtree(project / "helm")
    assert "example-app" in run(k3sfleet, "db", "list", cwd=project, env=env)
    services = "from k3sfleet.dr import load_services; print(sorted(load_services('.')))"
    assert "postgresql" in run(python, "-c", services, cwd=project, env=env)


def test_strict_undefined_is_what_the_templates_get() -> None:
    """The shared environment fails on a missing variable instead of rendering nothing."""
    import jinja2

    from k3sfleet.templating import environment

    env = environment()
    assert env.list_templates(extensions=["j2"]), "no templates found"
    assert env.undefined is jinja2.StrictUndefined
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("{{ missing }}").render()


@pytest.mark.package
def test_wheel_and_sdist_carry_the_licence_and_metadata(installed: dict[str, Path]) -> None:
    import tarfile
    import zipfile

    wheel = zipfile.ZipFile(installed["wheel"])
    names = wheel.namelist()
    [licence] = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
    text = wheel.read(licence).decode()
    assert "GNU GENERAL PUBLIC LICENSE" in text and "Version 3, 29 June 2007" in text
    assert "k3sfleet/py.typed" in names
    [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
    meta = wheel.read(metadata).decode()
    assert "License-Expression: GPL-3.0-or-later" in meta
    assert "Project-URL: Repository, " in meta and "Classifier: Typing :: Typed" in meta
    requires = [line for line in meta.splitlines() if line.startswith("Requires-Dist: boto3")]
    assert requires and all("extra == \"backup\"" in line for line in requires), requires

    sdist_dir = installed["tmp"] / "sdist"
    run(sys.executable, "-c", "import sys; from setuptools import build_meta; "
        f"build_meta.build_sdist({str(sdist_dir)!r})", cwd=installed["tmp"] / "src")
    [sdist] = sdist_dir.glob("k3sfleet-*.tar.gz")
    with tarfile.open(sdist) as tar:
        members = tar.getnames()
    assert any(m.endswith("/LICENSE") for m in members), members[:20]


def test_dependency_ranges_stay_inside_pyinfras() -> None:
    """pip backtracks when our range allows versions pyinfra refuses (paramiko: pyinfra 3.10
    requires paramiko<5,>=2.11, its METADATA)."""
    import tomllib
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    ours = {Requirement(r).name.lower(): Requirement(r).specifier for r in tomllib.loads(
        (ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    theirs = {Requirement(r).name.lower(): Requirement(r).specifier
              for r in requires("pyinfra") or [] if "extra ==" not in r}
    probes = [f"{major}.{minor}" for major in range(0, 12) for minor in (0, 5)]
    for name in sorted(set(ours) & set(theirs)):
        outside = [v for v in probes if v in ours[name] and v not in theirs[name]]
        assert outside == [], f"{name}: ours {ours[name]} allows {outside}, pyinfra {theirs[name]}"
    assert "boto3" not in ours  # an extra: `pip install 'k3sfleet[backup]'`


def test_backup_without_boto3_says_which_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from k3sfleet.backup import BackupError, r2_client

    monkeypatch.setitem(sys.modules, "boto3", None)  # import boto3 -> ImportError
    with pytest.raises(BackupError, match=r"pip install 'k3sfleet\[backup\]'"):
        r2_client(object())
