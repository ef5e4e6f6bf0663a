"""The stand-in k3s: one executable with `server`, `agent`, `--version` and `etcd-snapshot`.

This package is bundled into a zipapp (see k3sfleet.lab.artifacts.build_k3s_executable) whose
shebang is the lab runtime's Python, with its version baked in. Modules here import each other
relatively and use only the standard library, PyYAML and cryptography, so the same code runs
inside lab hosts and, for the emulator tests, on the machine.
"""
