"""Writing `render()`'s Envoy documents to a directory Envoy watches (`render --out-dir`,
`fallback render`): the one place that decides the file layout.

Without spec.fallback: `envoy.yaml` and `tokenlimit-ecds.yaml` side by side (what `tokenlimit
push --ecds` replaces). With it: `ecds/` and `rds/` each in a directory of its own (Envoy
watches a config file's whole directory, so the toggles' rename of the route table never
wakes the ECDS watcher), and the toggles' state file `tokenlimit-fallback.json`.
"""

from __future__ import annotations

from pathlib import Path

from tokenlimit.apply.files import write_atomic
from tokenlimit.loader import LoadedPolicy
from tokenlimit.render import EnvoyTarget, Upstream, render
from tokenlimit.render.envoy.common import ROUTE_TIMEOUT_S

STATE_FILE = "tokenlimit-fallback.json"  # fallback.toggles.STATE_FILE_DEFAULT


def write_envoy_files(
    policy: LoadedPolicy,
    out_dir: Path,
    *,
    wasm_path: str,
    upstream: Upstream | None,
    listen_address: str,
    listen_port: int,
    admin_port: int,
) -> list[Path]:
    """Render `policy` for Envoy into `out_dir`; the paths written, bootstrap first.

    Raises RenderError (nothing written) when the policy cannot run on Envoy.
    """
    fallback = policy.policy.spec.fallback if policy.policy is not None else None
    directory = out_dir.resolve()
    ecds = directory / "tokenlimit-ecds.yaml"
    rds: Path | None = None
    if fallback is not None:
        ecds = directory / "ecds" / "tokenlimit-ecds.yaml"
        rds = directory / "rds" / "routes.yaml"
    target = EnvoyTarget(
        wasm_path=wasm_path,
        upstream=upstream,
        ecds_path=str(ecds),
        rds_path=str(rds) if rds is not None else None,
        listen_address=listen_address,
        listen_port=listen_port,
        admin_port=admin_port,
    )
    rendered = render(policy, "envoy", target)
    bootstrap = directory / "envoy.yaml"
    write_atomic(ecds, rendered.text("ecds"))
    written = [bootstrap, ecds]
    if fallback is not None and rds is not None:
        from tokenlimit.fallback.toggles import init_state

        write_atomic(rds, rendered.text("rds"))
        state = directory / STATE_FILE
        admin_url = f"http://127.0.0.1:{admin_port}"
        init_state(state, fallback, rds, admin_url=admin_url, route_timeout_s=ROUTE_TIMEOUT_S)
        written += [rds, state]
    write_atomic(bootstrap, rendered.text("bootstrap"))
    return written
