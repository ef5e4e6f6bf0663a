"""A user's project folder and what the package ships for it: entry files, charts, a skeleton.

A clone of the repository is a project (``inventory.py``, ``deploys/``, ``helm/`` at the top); so
is any folder made by ``k3sfleet init``, which copies the files a user is meant to edit
(``inventory.py``, ``.envrc.example``, the charts under ``helm/``, the Secrets list
``deploys/secrets.py``) and writes an encrypted vault skeleton, the way ``helm create`` and
``ansible-galaxy init`` start a project. Everything else (the deploys, facts and templates) is
used from the installed package (``k3sfleet.deploys`` ...), so a user's own top-level ``deploys``
package is never shadowed.

The project's own copy of a file wins over the packaged one: ``entry_file("secrets", project)``
is ``project/deploys/secrets.py`` when the project has it, else the installed entry file.

Example::

    written = init(Path("my-cluster"), password=b"s3cret")
    entry_file("bootstrap", Path("my-cluster"))   # .../site-packages/k3sfleet/deploys/bootstrap.py
    chart_dir(Path("my-cluster"), "helm/apps")    # my-cluster/helm/apps (its copy from init)
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

from k3sfleet.errors import ConfigError
from k3sfleet.vault import encrypt, write_atomic

PACKAGE_DIR = Path(__file__).resolve().parent
# The entry files and the charts as installed (in a clone: symlinks to deploys/ and helm/).
ENTRY_DIR = PACKAGE_DIR / "deploys"
SKELETON_DIR = PACKAGE_DIR / "skeleton"
CHARTS_DIR = SKELETON_DIR / "helm"
# Files the user edits: skeleton name -> name in the project. The Secrets list is an entry file
# users extend (see its docstring), so init gives them their own copy.
EDITABLE = {
    "inventory.py": "inventory.py",
    "envrc.example": ".envrc.example",
    "gitignore": ".gitignore",
    "helm": "helm",
}
EDITABLE_ENTRIES = ("secrets",)
VAULT_SKELETON = SKELETON_DIR / "vault.skeleton.yml"


def is_entry_file(path: Path) -> bool:
    """Whether the file at ``path`` is an entry file: it acts at module level under ``if
    under_pyinfra():`` (``k3sfleet.entry``; read with ``ast``, the file is not run)."""
    return any(
        isinstance(node, ast.If) and isinstance(node.test, ast.Call)
        and getattr(node.test.func, "id", None) == "under_pyinfra"
        for node in ast.parse(path.read_text(encoding="utf-8")).body
    )


def entry_names() -> list[str]:
    """The entry files people run (``bootstrap``, ``cluster`` ...) among the installed
    ``deploys`` (``deploys/__init__.py`` lists them and the building blocks)."""
    return sorted(p.stem for p in ENTRY_DIR.glob("*.py") if is_entry_file(p))


def entry_summary(path: Path) -> str:
    """The first line of the docstring of the entry file at ``path`` (read with ``ast``: the
    file is not run), for ``k3sfleet deploy --list``.

    Example::

        entry_summary(ENTRY_DIR / "cluster.py")  # "Bring up or converge the whole K3s ..."
    """
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def entry_file(entry: str, project: Path) -> Path:
    """The file for ``entry``: a path (``deploys/cluster.py``, ``my_deploy.py``) relative to
    ``project`` when it exists there, else a name (``cluster``, ``cluster.py``,
    ``deploys/cluster.py``) looked up in the project's ``deploys/`` first, then in the package.
    Raises ``ConfigError`` naming the known entries."""
    given = Path(entry)
    if given.suffix == ".py" and (project / given).is_file():
        return (project / given).resolve()
    name = given.stem
    own = project / "deploys" / f"{name}.py"
    if own.is_file():
        return own.resolve()
    if name in entry_names():
        return ENTRY_DIR / f"{name}.py"
    raise ConfigError(
        f"no entry file {entry!r} (in {project / 'deploys'} or the package); "
        f"the entry files are: {', '.join(entry_names())}"
    )


def chart_dir(project: Path | str, chart_path: str) -> Path:
    """The chart at ``chart_path`` (``helm/apps``) in ``project`` when it has one, else the
    chart of the same name shipped with the package (its defaults)."""
    own = Path(project) / chart_path
    if (own / "values.yaml").is_file():
        return own
    packaged = CHARTS_DIR / Path(chart_path).name
    return packaged if (packaged / "values.yaml").is_file() else own


def init(project: Path, password: bytes, *, force: bool = False) -> list[Path]:
    """Start a project in ``project``: the editable files and a vault skeleton encrypted with
    ``password`` (format 1.1, mode 0600). Refuses to overwrite anything unless ``force``;
    returns the paths written."""
    targets = {project / dest: SKELETON_DIR / src for src, dest in EDITABLE.items()}
    for name in EDITABLE_ENTRIES:
        targets[project / "deploys" / f"{name}.py"] = ENTRY_DIR / f"{name}.py"
    vault = project / "vault.yml"
    existing = [p for p in [*targets, vault] if p.exists()]
    if existing and not force:
        raise ConfigError(
            [f"{p} exists (--force overwrites it)" for p in existing]
        )
    project.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for dest, src in targets.items():
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copyfile(src, dest)
        written.append(dest)
    write_atomic(vault, encrypt(VAULT_SKELETON.read_text(encoding="utf-8"), password))
    written.append(vault)
    return written
