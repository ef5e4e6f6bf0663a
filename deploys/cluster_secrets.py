"""Kubernetes Secrets from a list of ``SecretSpec`` (the ``secrets`` deploy).

The list to edit lives in the entry file ``deploys/secrets.py``, which runs this deploy with it.
On the run's API host only, every variable the list needs is checked first (nothing is touched
when one is missing), namespaces are created and a Secret is written only when it differs,
through one API session (``k3sfleet.k8s_secrets``).

Example (your own deploy)::

    from k3sfleet.deploys.cluster_secrets import secrets
    from k3sfleet.k8s_secrets import SecretSpec, env

    secrets(specs=[SecretSpec("myapp", "api-key", {"key": env("MYAPP_API_KEY")})])
"""

from __future__ import annotations

from collections.abc import Sequence

from pyinfra.api import deploy

from k3sfleet.k8s_secrets import SecretSpec, Values, secrets_deploy
from k3sfleet.kube import ApiSession


@deploy("Secrets")
def secrets(
    specs: Sequence[SecretSpec],
    values: Values | None = None,
    session: ApiSession | None = None,
) -> None:
    """Apply ``specs`` from the run's API host: every variable checked first, one API session,
    one operation per Secret named with what changes."""
    secrets_deploy(specs, values=values, session=session)
