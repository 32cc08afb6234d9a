"""A real Kubernetes control plane and Argo CD on 127.0.0.1, built from Go modules, for storeops' tests.

``harness/build.sh`` builds the binaries; :mod:`harness.stack` starts and stops them; the pytest
fixtures in ``tests/controlplane.py`` wrap both.
"""
