"""Moved to `tokenlimit.apply.kube` (the one Kubernetes client, shared with `push`).

This name stays only for `operator/renderers.py`, `render/higress.py` and `render/istio.py`,
which another change rewrites onto one render() pipeline; it goes when they import
`tokenlimit.apply.kube` (or stop needing a Kubernetes type).
"""

from tokenlimit.apply.kube import CONFIG_MAP, Kind, KubeClient, Obj, ObjectRef

__all__ = ["CONFIG_MAP", "Kind", "KubeClient", "Obj", "ObjectRef"]
