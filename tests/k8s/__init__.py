"""The tests on the real Kubernetes control plane (a package: its ``plane`` lives as long as
these tests run, not the whole session)."""
