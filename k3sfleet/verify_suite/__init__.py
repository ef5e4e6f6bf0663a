"""The verification suite ``k3sfleet verify`` runs against a live cluster (pytest-testinfra).

Shipped with the package so it runs from an install; ``pytest`` collects it only with
``--inventory`` (see ``conftest.py``).
"""
