"""k3sfleet.lab.tailnet (the lab's Tailscale builds) and the real tailscale .deb
(k3sfleet.lab.artifacts.build_real_tailscale_deb), without running a Go build."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

from k3sfleet.lab import artifacts, gobuild, tailnet


def test_the_builds_pin_and_stamp_the_version_and_follow_our_go_sources(tmp_path: Path) -> None:
    version = tailnet.TAILSCALE_VERSION
    for build in tailnet.BUILDS:
        assert build.module_dir == tailnet.SOURCE and build.env == {"CGO_ENABLED": "0"}
    for build in (tailnet.TAILSCALED, tailnet.TAILSCALE):
        assert f"-X tailscale.com/version.shortStamp={version}" in build.ldflags
        assert f"-X tailscale.com/version.longStamp={version}-k3sfleet-lab" in build.ldflags
    go_mod = (tailnet.SOURCE / "go.mod").read_text()
    assert f"require tailscale.com v{version}\n" in go_mod
    assert "tool (\n\ttailscale.com/cmd/tailscale\n\ttailscale.com/cmd/tailscaled\n)" in go_mod
    # the gate file is ours, added to testcontrol only for tscontrol, and part of its key
    assert tailnet.TSCONTROL.additions == {
        "tstest/integration/testcontrol/labgate.go": "testcontrol_labgate.go.in"}
    key = gobuild.cache_key(tailnet.TSCONTROL, "go1.26.8")
    source = tmp_path / "tscontrol"
    shutil.copytree(tailnet.SOURCE, source)
    (source / "testcontrol_labgate.go.in").write_text("// changed\n")
    changed = dataclasses.replace(tailnet.TSCONTROL, module_dir=source)
    assert gobuild.cache_key(changed, "go1.26.8") != key


def test_the_real_package_has_tailscales_layout(tmp_path: Path) -> None:
    directory = tmp_path / "bins"
    directory.mkdir()
    for name in ("tailscale", "tailscaled", "tscontrol"):
        (directory / name).write_bytes(b"\x7fELF" + name.encode())
    for source, _, _, _ in artifacts.REAL_DEB_FILES:
        kept = directory / source
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text(f"# {source}\n" if not source.endswith(".sh") else "#!/bin/sh\n")
    bins = tailnet.TailscaleBinaries(directory / "tailscaled", directory / "tailscale",
                                     directory / "tscontrol", "1.102.5")
    deb = artifacts.build_real_tailscale_deb(tmp_path / "out", bins)
    assert deb.name == "tailscale_1.102.5_amd64.deb"
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True,
                             check=True).stdout
    files = {line.split()[-1]: line.split()[0] for line in listing.splitlines()}
    for path in ("./usr/bin/tailscale", "./usr/sbin/tailscaled"):
        assert files[path] == "-rwxr-xr-x"
    for path in ("./lib/systemd/system/tailscaled.service", "./etc/default/tailscaled",
                 "./lib/systemd/system/tailscale-online.target",
                 "./lib/systemd/system/tailscale-wait-online.service"):
        assert files[path] == "-rw-r--r--"

    def field(name: str) -> str:
        return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True,
                              text=True, check=True).stdout.strip()

    assert (field("Package"), field("Version"), field("Depends")) == (
        "tailscale", "1.102.5", "iptables")
    control = subprocess.run(["dpkg-deb", "--ctrl-tarfile", str(deb)], capture_output=True,
                             check=True).stdout
    extracted = tmp_path / "control"
    extracted.mkdir()
    subprocess.run(["tar", "-x", "-C", str(extracted)], input=control, check=True)
    assert (extracted / "conffiles").read_text() == "/etc/default/tailscaled\n"
    assert {p.name for p in extracted.iterdir()} >= {"postinst", "prerm", "postrm"}
