"""Async jobs under the budget: the OpenAI Batch API and `Prefer: respond-async` (issue 14).

`tokenlimit jobs --gateway URL --redis URL --listen PORT [--workers N]` serves the OpenAI
Files and Batches API and single asynchronous requests, and runs every request through the
gateway with the submitter's own credentials, so their budgets apply and a budget or a
provider limit delays the work instead of failing it.

The queue engine is Redis Streams with one consumer group (queue.py says why in full): the
service needs Redis anyway (the budgets' store, and here files, results and credentials),
XREADGROUP + XACK give at-least-once delivery, XAUTOCLAIM hands a dead worker's job to another
within a bound, and it adds no dependency. A job library (arq, RQ, dramatiq, taskiq, Celery)
would bring its own worker model on the same primitives without removing the batch logic.

Modules, one concern each:

- config.py     JobsConfig: gateway, Redis, bounds, lifetimes, pacing
- store.py      Redis keys, TTLs, results written once, credentials, the pace per caller
- credentials.py the stored credentials encrypted (Fernet), the key file, its errors
- queue.py      the stream and group: take (claim idle first), touch, ack
- batch_file.py the JSONL formats and bounds, JobError (OpenAI's error JSON)
- lifecycle.py  a batch's statuses: create, cancel, finish (output and error files)
- pacing.py     429 / Retry-After / x-ratelimit-* -> how long to wait (pure)
- worker.py     one consumer: attempts through the gateway, pacing, retries
- api.py        the aiohttp routes; service.py one process (API + workers)
- metrics.py    prometheus_client; launch.py starts the service as a child (tests, `up`)
"""
