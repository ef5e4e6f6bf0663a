"""Argo CD and the root App-of-Apps Applications on the first server.

Entry file. Run: ``pyinfra inventory.py deploys/argocd.py`` (or ``k3sfleet deploy argocd``).

Runs the ``argocd`` deploy (``deploys/gitops.py``, which says what it writes) once the cluster
is up. ``PREFLIGHT``: the GitOps repository, the domain, the Velero bucket and the R2 endpoint
are set, and the OIDC settings when ``ARGOCD_OIDC_ENABLED``.
"""

from k3sfleet.deploys.gitops import argocd
from k3sfleet.entry import under_pyinfra
from k3sfleet.preflight import argocd_oidc_check, require

# Checked before any host is contacted (k3sfleet.preflight)
PREFLIGHT = [
    argocd_oidc_check,
    require("gitops_repo_url", "domain", "velero_bucket", "r2_endpoint"),
]

if under_pyinfra():
    argocd()
