"""Per-application PostgreSQL credentials as Kubernetes Secrets (``appDatabases``).

Entry file. Run: ``pyinfra inventory.py deploys/databases.py`` (or ``k3sfleet deploy
databases``), after ``k3sfleet db generate-passwords``.

Runs the ``databases`` deploy (``deploys/app_databases.py``, which says which Secrets it
writes). ``PREFLIGHT``: ``appDatabases`` well formed, each app's namespace found, each app's
password in the vault. This replaces the Ansible repository's ``setup-secrets-database.yml``.
"""

from k3sfleet.deploys.app_databases import databases
from k3sfleet.entry import under_pyinfra
from k3sfleet.preflight import databases_check

# Checked before any host is contacted (k3sfleet.preflight)
PREFLIGHT = [databases_check]

if under_pyinfra():
    databases()
