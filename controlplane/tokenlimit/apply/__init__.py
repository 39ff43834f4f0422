"""Carrying rendered objects to where they take effect: files Envoy watches (files.py), the
Kubernetes API, and reading a running Envoy's admin endpoint (envoy_admin.py)."""
