"""Keep the K3s cluster token in the vault, so a rebuilt server and an etcd restore have it.

Without ``K3S_TOKEN`` the first server generates the token and only the servers hold it
(``/var/lib/rancher/k3s/server/node-token``). K3s needs it again to rejoin a rebuilt server and
to restore an etcd snapshot: it decrypts the bootstrap data (certificates) kept in the
datastore and its snapshots, and ``k3s server --cluster-reset --cluster-reset-restore-path``
refuses to restore without ``--token`` when ``server/token`` is gone (k3s-io/k3s
pkg/cli/server/server.go: "<data dir>/server/token does not exist, please pass --token to
complete the restoration").

``save`` reads the token over SSH (host keys checked) and writes it to the vault as
``vault_k3s_token``, which is where ``K3S_TOKEN`` is read from. The value never reaches stdout,
a command line or a log.

Example::

    outcome = save(server, Path("vault.yml"), password)   # "stored" or "unchanged"
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from k3sfleet.errors import K3sfleetError
from k3sfleet.facts.k3s import NODE_TOKEN
from k3sfleet.kube import read_root_file, ssh_client
from k3sfleet.secret import Secret
from k3sfleet.vault import read_vault_file, set_value

if TYPE_CHECKING:  # imported when used: deploys/cluster.py needs only ``notice``
    from k3sfleet.kube import HostInfo

VAULT_KEY = "vault_k3s_token"
SAVE_COMMAND = "k3sfleet token save"


class TokenError(K3sfleetError):
    """The token could not be read, or the vault holds a different one."""


def fetch(server: HostInfo) -> Secret:
    """The node-token of ``server`` (``sudo -n cat`` over SSH), as a ``Secret``."""
    ssh = ssh_client(server)
    try:
        text = read_root_file(ssh, server, NODE_TOKEN, TokenError).decode().strip()
    finally:
        ssh.close()
    if not text:
        raise TokenError(f"{NODE_TOKEN} on {server.name} is empty; has K3s started there?")
    return Secret(text)


def save(server: HostInfo, vault: Path, password: bytes) -> str:
    """Store ``server``'s token in ``vault`` as ``vault_k3s_token``: ``"stored"``, or
    ``"unchanged"`` when the vault has it already. A different token in the vault is never
    overwritten (one of the two would lock the cluster out of its data): ``TokenError``."""
    token = fetch(server)
    current = read_vault_file(vault, password).data.get(VAULT_KEY)
    if current:
        if str(current) == token.unmask():
            return "unchanged"
        raise TokenError(
            f"k3sfleet: {vault} holds a {VAULT_KEY} that is not the token of {server.name}; "
            "nothing was changed. Find out which one the cluster was started with before "
            f"replacing it (`k3sfleet vault edit`)."
        )
    set_value(vault, VAULT_KEY, token.unmask(), password)
    return "stored"


def notice(first_server: str) -> str:
    """What cluster.py says while ``K3S_TOKEN`` is unset."""
    return (
        f"k3sfleet: K3S_TOKEN is not set: the cluster token exists only on the servers "
        f"({first_server}:{NODE_TOKEN}). A rebuilt server and an etcd restore need it (it "
        f"decrypts the datastore and its snapshots). Once {first_server} runs, keep it in the "
        f"vault: `{SAVE_COMMAND}` (reads it over SSH, writes {VAULT_KEY}, prints nothing)."
    )
