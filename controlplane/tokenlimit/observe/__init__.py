"""Seeing tokenlimit at work and being told: the live panel (`tokenlimit dashboard`), alerts
(`tokenlimit alerts`), call-log summaries (`tokenlimit logs`) and the webhook sender.

One module per concern: prom.py (Envoy's /stats/prometheus, parsed and summed), notify.py
(webhooks), alerts.py (episodes: fire once, resolve once), logs.py (the access log),
snapshot.py (what the panel shows), dashboard.py (the aiohttp server) and page.html.
"""
