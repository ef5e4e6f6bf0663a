"""k3sfleet's deploys: the entry files people run, and the building blocks those call.

One folder holds both (``pyinfra inventory.py deploys/cluster.py`` runs from a clone as from an
install); which is which shows in each file and is listed here:

- an **entry file** is what you run: ``pyinfra inventory.py deploys/NAME.py`` or ``k3sfleet
  deploy NAME`` (``k3sfleet deploy --list`` prints each with its first docstring line). Its
  docstring says ``Entry file. Run: ...``; it declares ``PREFLIGHT`` (the checks made before
  any host is contacted) and calls building blocks only under ``if under_pyinfra():``; it
  defines no ``@deploy`` or ``@operation``.
- a **building block** is what they call: ``@deploy`` functions (with their ``DEFAULTS`` block
  at the top, ``k3sfleet.settings.Default``), operations and the pure functions behind them.
  Importing one never runs an operation, and no building block imports an entry file.

``tests/unit/test_import_graph.py`` holds these lists to the files and enforces the rules.
"""

ENTRY_FILES = (
    "argocd", "bootstrap", "cluster", "databases", "init_cluster", "maintenance", "reset",
    "secrets", "upgrade",
)
BUILDING_BLOCKS = (
    "app_databases", "cluster_secrets", "common", "firewall", "gitops", "k3s_agent",
    "k3s_install", "k3s_node", "k3s_prereq", "k3s_server", "k3s_uninstall", "k3s_upgrade",
    "ops", "os_maintenance", "readmodel", "tailscale",
)
