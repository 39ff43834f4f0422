"""Model fallback: a route's upstreams in priority order, kept under the same token budget.

- `model`: the typed fallback chain (`FallbackSpec`, one `FallbackRoute` per route).
- Rendering is part of the one pipeline, `tokenlimit.render.render` (spec.fallback is a policy
  field like any other): standalone Envoy in `render/envoy/` (clusters.py: aggregate clusters;
  fallback.py: retry priority, back-off, model rewrite, the route table served through
  file-based RDS so toggles are live), Higress in `render/higress_fallback.py` (fallback routes
  in the limiter's matchRules, a redirect policy that only upstream codes trigger).
- `toggles`: `tokenlimit fallback enable|disable|status` on a state file (standalone Envoy) or a
  policy document (Kubernetes); `auto`: switching on the primary's 429/5xx rate.
- `cli`: the click group the CLI registers as `tokenlimit fallback`.

See docs/fallback.md.
"""
