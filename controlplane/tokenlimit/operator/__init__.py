"""`tokenlimit operator`: reconciles TokenRateLimitPolicy objects into gateway configuration.

- reconcile.py  the pure reconcile function (policy + owned objects → plan + status)
- renderers.py  the project's renderers per gateway kind, behind the `Renderer` protocol
- controller.py one reconcile against the API (reads, applies, deletes, writes status)
- loop.py       list + watch + work queue with back-off; resync
- leader.py     optional leader election: kubernetes.leaderelection on a Lease
- kube.py       an alias of tokenlimit.apply.kube for the renderers, until they move
The Kubernetes client is tokenlimit.apply.kube (the `KubeClient` seam, shared with `push`) and
apply/kube_client.py (its implementation on the official client); tests/support/fakekube.py
is an in-memory API server behind the same seam, for tests.
- module_server.py  serves the .wasm modules (and their sha256) to gateways
- command.py    the click command

Nothing here imports the `kubernetes` package until the operator actually connects.
"""
