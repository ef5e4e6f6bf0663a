"""k3sfleet.lab.tailnet (the lab's Tailscale builds), the tailscale .deb
(k3sfleet.lab.artifacts.build_tailscale_deb) and the artifact services (k3s mirror, signed apt
repository, HTTP server on loopback), without running a Go build."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from k3sfleet.lab import artifacts, gobuild, hosts, tailnet
from k3sfleet.lab.artifacts import build_k3s_executable
from k3sfleet.lab.standins import LAB_K3S_VERSIONS

OLD, NEW = LAB_K3S_VERSIONS[0], LAB_K3S_VERSIONS[-1]


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
    # tailscaled and tailscale are tailscale.com's packages, resolved through our go.mod/go.sum:
    # editing tscontrol's own files leaves their keys (and their minutes of build) alone
    (source / "main.go").write_text("package main\n\nfunc main() {}\n")
    for build in (tailnet.TAILSCALED, tailnet.TAILSCALE):
        moved = dataclasses.replace(build, module_dir=source)
        assert gobuild.cache_key(moved, "go1.26.8") == gobuild.cache_key(build, "go1.26.8")
    assert gobuild.cache_key(dataclasses.replace(tailnet.TSCONTROL, module_dir=source),
                             "go1.26.8") != key
    (source / "go.sum").write_text((source / "go.sum").read_text() + "\n")
    for build in (tailnet.TAILSCALED, tailnet.TAILSCALE):
        moved = dataclasses.replace(build, module_dir=source)
        assert gobuild.cache_key(moved, "go1.26.8") != gobuild.cache_key(build, "go1.26.8")


def fake_binaries(directory: Path) -> tailnet.TailscaleBinaries:
    """Stand-ins for the built programs and the module's packaging files (no Go build)."""
    directory.mkdir()
    for name in ("tailscale", "tailscaled", "tscontrol"):
        (directory / name).write_bytes(b"\x7fELF" + name.encode())
    for source, _, _, _ in artifacts.DEB_FILES:
        kept = directory / source
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text(f"# {source}\n" if not source.endswith(".sh") else "#!/bin/sh\n")
    return tailnet.TailscaleBinaries(directory / "tailscaled", directory / "tailscale",
                                     directory / "tscontrol", "1.102.5")


def test_the_real_package_has_tailscales_layout(tmp_path: Path) -> None:
    bins = fake_binaries(tmp_path / "bins")
    deb = artifacts.build_tailscale_deb(tmp_path / "out", bins)
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


# -- the artifact services: k3s mirror, signed apt repository, HTTP server --------------------
def test_artifacts_mirror_and_signed_apt_repository(tmp_path: Path) -> None:
    from k3sfleet.lab.artifacts import build_artifacts, serve

    cache = tmp_path / "cache"
    bins = fake_binaries(tmp_path / "bins")
    artifacts = build_artifacts(tmp_path / "www", cache, bins)
    assert artifacts.k3s_versions == LAB_K3S_VERSIONS
    for version in LAB_K3S_VERSIONS:
        binary = tmp_path / "www/k3s" / version / "k3s"
        assert binary.read_bytes().startswith(b"#!/opt/k3sfleet-standin/venv/bin/python\n")
        assert binary.stat().st_mode & 0o111
        line = (tmp_path / "www/k3s" / version / "sha256sum-amd64.txt").read_text()
        assert line == f"{hashlib.sha256(binary.read_bytes()).hexdigest()}  k3s\n"
        assert build_k3s_executable(version) == binary.read_bytes()  # reproducible
    assert build_k3s_executable(OLD) != build_k3s_executable(NEW)

    debian = tmp_path / "www/tailscale/debian"
    dist = debian / "dists/bookworm"
    keyring = debian / "bookworm.noarmor.gpg"
    assert keyring == artifacts.keyring and keyring.read_bytes()[:1] != b"-"  # binary, no armor

    def gpgv(*args: str) -> int:
        return subprocess.run(
            ["gpgv", "--keyring", str(keyring), *args], capture_output=True
        ).returncode

    assert gpgv(str(dist / "InRelease")) == 0
    assert gpgv(str(dist / "Release.gpg"), str(dist / "Release")) == 0
    tampered = tmp_path / "Release"
    tampered.write_text((dist / "Release").read_text().replace("Tailscale", "Evil"))
    assert gpgv(str(dist / "Release.gpg"), str(tampered)) != 0
    packages = (dist / "main/binary-amd64/Packages").read_bytes()
    assert f" {hashlib.sha256(packages).hexdigest()} " in (dist / "Release").read_text()
    stanzas = [
        dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        for block in packages.decode().split("\n\n")
        if block.strip()
    ]
    by_name = {stanza["Package"]: stanza for stanza in stanzas}
    # the repository serves tailscale and, as Tailscale's does, tailscale-archive-keyring
    assert sorted(by_name) == ["tailscale", "tailscale-archive-keyring"]
    fields = by_name["tailscale"]
    assert fields["Version"] == bins.version
    deb = debian / fields["Filename"]
    listing = subprocess.run(
        ["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True
    ).stdout
    for path in (
        "./usr/bin/tailscale",
        "./usr/sbin/tailscaled",
        "./lib/systemd/system/tailscaled.service",
    ):
        assert path in listing
    assert not hosts.processes(str(cache / "apt-gpg"))  # no gpg-agent left behind
    # a second build reuses the cached key
    again = build_artifacts(tmp_path / "www2", cache, bins)
    assert again.key_fingerprint == artifacts.key_fingerprint

    server = serve(tmp_path / "www", "127.0.0.1", 0)
    try:
        for version in (NEW, NEW.replace("+", "%2B")):
            with urllib.request.urlopen(
                f"{server.url}/k3s/{version}/sha256sum-amd64.txt", timeout=5
            ) as reply:
                assert reply.read().decode().endswith("  k3s\n")
        artifacts.corrupt_checksum(OLD)
        with urllib.request.urlopen(
            f"{server.url}/k3s/{OLD}/sha256sum-amd64.txt", timeout=5
        ) as reply:
            assert reply.read().decode() != f"{artifacts.k3s_sha256[OLD]}  k3s\n"
        artifacts.restore_checksum(OLD)
        with urllib.request.urlopen(
            f"{server.url}/k3s/{OLD}/sha256sum-amd64.txt", timeout=5
        ) as reply:
            assert reply.read().decode() == f"{artifacts.k3s_sha256[OLD]}  k3s\n"
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"{server.url}/k3s/v0.0.0/k3s", timeout=5)
    finally:
        server.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{server.url}/k3s/{NEW}/k3s", timeout=2)


def test_lab_auth_keys() -> None:
    from k3sfleet.lab.artifacts import auth_key_sha256, lab_auth_key

    one, two = lab_auth_key("lab3"), lab_auth_key("lab3")
    assert one.startswith("tskey-auth-") and one != two
    assert auth_key_sha256(one) == hashlib.sha256(one.encode()).hexdigest()
