"""Development tools shipped for `tokenlimit up`, the mock LLM and the demo: child processes,
a local gateway. Never imported by the filter's server path, the operator or the bridge."""
