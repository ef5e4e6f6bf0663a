"""The tailnet policy K3s's pod network needs, from the settings.

With vpn-auth every node advertises its pod CIDR as a subnet route (k3s-io/k3s v1.34.2+k3s1
``pkg/agent/flannel/setup.go``: ``tailscale set --accept-routes --advertise-routes=$SUBNET``),
and a route carries traffic only once the control plane approves it. ``autoApprovers.routes``
approves every node's /24 of the cluster CIDR as it appears; its owners are the nodes' tags
(``TAILSCALE_TAGS``), else every member's untagged devices.

Example::

    policy("tag:k3s")
    # {"autoApprovers": {"routes": {"10.42.0.0/16": ["tag:k3s"]}}}
"""

from __future__ import annotations

from typing import Any

#: K3s's default cluster CIDR (``--cluster-cidr``), which k3sfleet's config never changes.
POD_NETWORK = "10.42.0.0/16"


def policy(tags: str | None) -> dict[str, Any]:
    """The policy stanza that auto-approves the pod routes of nodes with ``tags`` (comma
    separated, as ``TAILSCALE_TAGS``); without tags, routes of members' own devices."""
    owners = [t.strip() for t in str(tags or "").split(",") if t.strip()] or ["autogroup:member"]
    return {"autoApprovers": {"routes": {POD_NETWORK: owners}}}
