"""``k3sfleet lab``: real Debian hosts on this machine (systemd-nspawn), for tests and demos.

Example::

    sudo k3sfleet lab up --servers 1 --agents 2
    sudo k3sfleet lab status
    sudo k3sfleet lab inventory -o lab_inventory.py && pyinfra lab_inventory.py deploys/bootstrap.py
    sudo k3sfleet lab demo
    sudo k3sfleet lab down
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kubernetes import client

from k3sfleet.kube import cluster_api
from k3sfleet.lab import Lab, LabError, unavailable_reason
from k3sfleet.settings import Settings

DEMO_ENTRY_FILES = ("deploys/bootstrap.py", "deploys/cluster.py")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("lab", help="real Debian hosts on this machine for tests and demos")
    actions = parser.add_subparsers(dest="lab_command", metavar="ACTION")
    actions.required = True

    up = actions.add_parser("up", help="boot a lab (default 1 server + 2 agents)")
    up.add_argument("--servers", type=int, default=1)
    up.add_argument("--agents", type=int, default=2)
    up.add_argument("--name", default=None, help="lab name (default lab<index>)")
    up.set_defaults(func=run_up)

    status = actions.add_parser("status", help="the running labs and their hosts")
    status.set_defaults(func=run_status)

    inventory = actions.add_parser("inventory", help="print or write the lab's pyinfra inventory")
    inventory.add_argument("name", nargs="?", default=None)
    inventory.add_argument("-o", "--output", default=None, help="write to this file (mode 0600)")
    inventory.set_defaults(func=run_inventory)

    down = actions.add_parser("down", help="stop a lab and remove everything it created")
    down.add_argument("name", nargs="?", default=None, help="default: the only running lab")
    down.add_argument("--all", action="store_true", help="every running lab")
    down.set_defaults(func=run_down)

    demo = actions.add_parser(
        "demo", help="up 1 server + 2 agents, run bootstrap then cluster, print the Nodes"
    )
    demo.add_argument("--keep", action="store_true", help="leave the lab running afterwards")
    demo.set_defaults(func=run_demo)


def _lab_dir(args: argparse.Namespace) -> str:
    return Settings.load(args.project_dir, use_vault=False).k3sfleet_lab_dir


def _check() -> None:
    reason = unavailable_reason()
    if reason:
        raise LabError(f"k3sfleet lab: {reason}")


def _pick(args: argparse.Namespace, name: str | None) -> Lab:
    names = Lab.running(_lab_dir(args))
    if name is None:
        if len(names) != 1:
            raise LabError(
                "k3sfleet lab: name the lab: " + (", ".join(names) if names else "none is running")
            )
        name = names[0]
    return Lab.load(name, _lab_dir(args))


def _print_lab(lab: Lab) -> None:
    print(f"lab {lab.name}: artifacts {lab.artifact_url}, ssh key {lab.ssh_key}, "
          f"known_hosts {lab.known_hosts}")
    for h in lab.hosts:
        state = "up" if lab.is_running(h) else "stopped"
        print(f"  {h.name:16} {h.role:6} {state:7} public {h.public_ip:14} "
              f"tailnet {h.tailnet_ip:14} ssh {h.user}@{h.public_ip}")


def run_up(args: argparse.Namespace) -> int:
    _check()
    lab = Lab.create(args.servers, args.agents, args.name, lab_dir=_lab_dir(args),
                     log=lambda m: print(m, file=sys.stderr))
    _print_lab(lab)
    print(f"setup {lab.timings.get('total', 0):.1f} s", file=sys.stderr)
    return 0


def run_status(args: argparse.Namespace) -> int:
    names = Lab.running(_lab_dir(args))
    if not names:
        print("no lab is running")
        return 0
    for name in names:
        _print_lab(Lab.load(name, _lab_dir(args)))
    return 0


def run_inventory(args: argparse.Namespace) -> int:
    lab = _pick(args, args.name)
    if args.output:
        print(lab.write_inventory(Path(args.output)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        sys.stdout.write(lab.write_inventory(Path(tmp) / "inventory.py").read_text())
    return 0


def run_down(args: argparse.Namespace) -> int:
    _check()
    names = Lab.running(_lab_dir(args)) if args.all else [_pick(args, args.name).name]
    for name in names:
        lab = Lab.load(name, _lab_dir(args))
        lab.down()
        left = {k: v for k, v in lab.leftovers().items() if v}
        if left:
            print(f"lab {name}: left behind {left}", file=sys.stderr)
            return 1
        print(f"lab {name}: down")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    _check()
    project = Path(args.project_dir).resolve()
    start = time.monotonic()
    lab = Lab.create(1, 2, lab_dir=_lab_dir(args), log=lambda m: print(m, file=sys.stderr))
    print(f"demo: lab up in {lab.timings.get('total', 0):.1f} s", flush=True)
    try:
        _print_lab(lab)
        inventory = lab.write_inventory(lab.directory / "inventory.py")
        entries = [e for e in DEMO_ENTRY_FILES if (project / e).exists()]
        if not entries:
            print("demo: no entry files yet (deploys/bootstrap.py, deploys/cluster.py)")
        for entry in entries:
            print(f"demo: pyinfra {inventory} {entry}", flush=True)
            done = subprocess.run(  # noqa: S603
                [sys.executable, "-m", "pyinfra", "-y", str(inventory), entry], cwd=project
            )
            if done.returncode != 0:
                print(f"demo: {entry} failed (exit {done.returncode})", file=sys.stderr)
                return done.returncode
        rc = _print_nodes(lab, inventory)
        print(f"demo: done in {time.monotonic() - start:.1f} s")
        return rc
    finally:
        if args.keep:
            print(f"demo: lab {lab.name} left running; `k3sfleet lab down {lab.name}`")
        else:
            lab.down()


def _print_nodes(lab: Lab, inventory: Path) -> int:
    """Print the cluster's Nodes as read through the Kubernetes API (k3sfleet.kube)."""
    with cluster_api(str(inventory)) as api:
        nodes: list[Any] = client.CoreV1Api(api).list_node().items
        print(f"demo: {len(nodes)} Node(s) through the API of {api.server.name}:")
        for node in nodes:
            conditions = node.status.conditions or []
            ready = next((c.status for c in conditions if c.type == "Ready"), "?")
            roles = ",".join(sorted(k.split("/", 1)[1] for k in node.metadata.labels or {}
                                    if k.startswith("node-role.kubernetes.io/"))) or "<none>"
            print(f"  {node.metadata.name:16} Ready={ready:6} roles={roles:28} "
                  f"{node.status.node_info.kubelet_version}")
    return 0
