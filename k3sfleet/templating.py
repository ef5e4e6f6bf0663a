"""Rendering ``templates/*.j2``: one Jinja2 environment for every deploy.

The templates ship inside the wheel as the ``templates`` package, so they are found next to the
installed code (never through the working directory). ``StrictUndefined`` turns a missing
variable into an error instead of an empty string; autoescape is off (YAML, INI, unit files).

Convention for the wheel test (tests/unit/test_package.py): a module that renders a template
exposes ``SAMPLE_CONTEXT = {"<name>.j2": {...sample variables...}}``; a template without one is
rendered with generated placeholder values. A new custom filter goes into ``FILTERS``.

Example::

    from k3sfleet.templating import render

    render("k3s-config.yaml.j2", settings={"node-name": "vps-aws-1"}, entry="deploys/cluster.py")
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jinja2

from k3sfleet import templates

TEMPLATES_DIR = Path(templates.__file__).resolve().parent

FILTERS: dict[str, Any] = {
    # JSON is valid YAML: a safe way to quote any scalar or structure in a YAML template.
    "json": lambda value: json.dumps(value, ensure_ascii=False),
}


@functools.cache
def environment() -> jinja2.Environment:
    """The environment deploys render with (StrictUndefined, trailing newline kept); one per
    process, so each template is parsed once however many hosts render it."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - YAML and unit files, not HTML
    )
    env.filters.update(FILTERS)
    return env


def render(name: str, **context: Any) -> str:
    """Render ``templates/<name>`` with ``context``; a missing variable raises."""
    return environment().get_template(name).render(**context)
