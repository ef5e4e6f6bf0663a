"""The wheel: built from the tree, installed into a fresh virtualenv, it imports every module under
``deploys/``, ``facts/`` and ``k3sfleet/`` and renders every template, all from the installed files.

Offline (the test suite talks to no registry): the wheel is built without build isolation and
installed with ``--no-deps --no-index``; the third-party dependencies come from the running
environment's site-packages through a ``.pth`` file. A ``.pth`` line adds a folder without running
the ``.pth`` files inside it, so the running environment's editable k3sfleet stays invisible, and
the test checks that every k3sfleet file it loaded lies inside the new virtualenv.
"""

from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SKIP_COPY = shutil.ignore_patterns(
    ".git", ".venv", ".tools", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".lab",
    "node_modules", "tests", "benchmarks", ".envrc*", ".env", "vault.yml", "*.log",
)

CHECK = r'''
import importlib, json, pkgutil, sys
from pathlib import Path

report = {"modules": {}, "import_errors": {}, "templates": {}, "render_errors": {},
          "sample_sources": {}}
samples = {}
for package in ("deploys", "facts", "k3sfleet"):
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
for name in templating.template_names():
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


def run(*args: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=600, check=False
    )
    assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def parent_site_dirs() -> list[str]:
    dirs = [*site.getsitepackages(), sysconfig.get_paths()["purelib"],
            sysconfig.get_paths()["platlib"]]
    return list(dict.fromkeys(d for d in dirs if Path(d).is_dir()))


@pytest.mark.package
def test_wheel_installs_imports_every_module_and_renders_every_template(tmp_path: Path) -> None:
    pytest.importorskip("wheel", reason="the test extra installs wheel (bdist_wheel)")
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=SKIP_COPY)
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
        "--no-index", "-w", dist, f"{src}{'/'}")
    [wheel] = dist.glob("k3sfleet-*.whl")

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    run(python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel)
    purelib = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
                   .strip())
    (purelib / "_k3sfleet_test_deps.pth").write_text("\n".join(parent_site_dirs()) + "\n")

    work = tmp_path / "elsewhere"  # not the tree: nothing may come from the working directory
    work.mkdir()
    report = json.loads(run(python, "-I", "-c", CHECK, cwd=work))

    assert report["import_errors"] == {}
    assert report["render_errors"] == {}
    # every module file of the tree is in the wheel, and was loaded from the venv
    expected = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for pkg in ("deploys", "facts", "k3sfleet")
        for p in (ROOT / pkg).rglob("*.py")
        if p.name != "__main__.py"
    }
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

    # the console script works from the wheel
    help_text = run(venv / "bin" / "k3sfleet", "--help", cwd=work)
    assert "vault" in help_text and "config" in help_text


def test_strict_undefined_is_what_the_templates_get() -> None:
    """The shared environment fails on a missing variable instead of rendering nothing."""
    import jinja2

    from k3sfleet.templating import environment, template_names

    names = template_names()
    assert names, "no templates found"
    env = environment()
    assert env.undefined is jinja2.StrictUndefined
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("{{ missing }}").render()
