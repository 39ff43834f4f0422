"""The tokenlimit bridge: RESP over HTTP to Redis, for stock Envoy (protocol: server.py).

- config.py   BridgeConfig, RedisTarget, secrets by reference
- server.py   /v1/resp, /healthz, /readyz, /metrics; start() and run()
- http.py     the HTTP/1.1 connection (httptools), read deadlines, answers in order
- scan.py     the fast body check (first 3 arguments kept); frame.py: reply ends
- pool.py     the Redis connections: how many, which one, connect back-off
- connection.py  one pipelined Redis connection (an asyncio.Protocol); RedisFault
- resp.py     RESP command bounds and reply framing (replies kept byte for byte)
- metrics.py  prometheus_client collectors

Nothing is imported here, so `tokenlimit.bridge.config` stays light for the CLI.
"""
