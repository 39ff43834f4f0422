"""Webhook sending, one place for every notification tokenlimit posts.

The fallback watcher's switches (`tokenlimit.fallback.auto`) and `tokenlimit alerts` both send
through `Webhook`, so a DingTalk signature or a WeCom size cap is right (or wrong) once.
Formats:

- `generic`: the message's own JSON (`Message.to_json()`).
- `dingtalk`: a group robot's text body, `{"msgtype": "text", "text": {"content": ...}}`; with
  a signing secret the URL gets `timestamp` and `sign` (HMAC-SHA256 of `<timestamp>\\n<secret>`
  keyed by the secret, base64, URL-quoted), as DingTalk's robot documentation describes.
- `wecom`: the same body shape; WeCom takes at most 2048 bytes of content.
- `slack`: an incoming webhook's `{"text": ...}`.

Sending never raises: a webhook that is down must not stop the watcher or the alert loop, so a
failure is logged (the URL without its query, where robot tokens travel) and `False` returned.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any, Protocol

LOG = logging.getLogger("tokenlimit.notify")
WEBHOOK_FORMATS = ("generic", "dingtalk", "wecom", "slack")
WEBHOOK_TIMEOUT_S = 5.0
WECOM_CONTENT_BYTES_MAX = 2048
DINGTALK_CONTENT_CHARS_MAX = 18000
SLACK_TEXT_CHARS_MAX = 40000  # Slack truncates a message's text past this
ROBOT_FORMATS = ("dingtalk", "wecom")  # answer 200 with {"errcode": ...}


class Message(Protocol):
    """Anything a webhook can carry: one line for people, a JSON object for programs."""

    def text(self) -> str: ...

    def to_json(self) -> dict[str, Any]: ...


def webhook_body(fmt: str, message: Message) -> dict[str, Any]:
    """The JSON a webhook of this format receives for a message."""
    if fmt == "generic":
        return message.to_json()
    text = message.text()
    if fmt == "wecom":
        encoded = text.encode()
        if len(encoded) > WECOM_CONTENT_BYTES_MAX:
            text = encoded[: WECOM_CONTENT_BYTES_MAX - 3].decode(errors="ignore") + "..."
        return {"msgtype": "text", "text": {"content": text}}
    if fmt == "dingtalk":
        return {"msgtype": "text", "text": {"content": text[:DINGTALK_CONTENT_CHARS_MAX]}}
    if fmt == "slack":
        return {"text": text[:SLACK_TEXT_CHARS_MAX]}
    raise ValueError(f"webhook format must be one of {', '.join(WEBHOOK_FORMATS)}, got {fmt!r}")


def dingtalk_signed_url(url: str, secret: str, now_ms: int) -> str:
    """DingTalk's signed robot URL: HMAC-SHA256 of `<timestamp>\\n<secret>`, base64, quoted."""
    digest = hmac.new(secret.encode(), f"{now_ms}\n{secret}".encode(), hashlib.sha256).digest()
    sign = urllib.parse.quote_plus(base64.b64encode(digest).decode())
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}timestamp={now_ms}&sign={sign}"


class Webhook:
    """Posts each message to one URL in one format; failures are logged, never raised."""

    def __init__(
        self,
        url: str,
        fmt: str = "generic",
        *,
        secret: str | None = None,
        timeout_s: float = WEBHOOK_TIMEOUT_S,
        clock: Callable[[], float] = time.time,
        logger: logging.Logger = LOG,
        label: str = "webhook",
    ) -> None:
        if fmt not in WEBHOOK_FORMATS:
            raise ValueError(
                f"webhook format must be one of {', '.join(WEBHOOK_FORMATS)}, got {fmt!r}"
            )
        if secret is not None and fmt != "dingtalk":
            raise ValueError("a signing secret is for DingTalk robots (format dingtalk)")
        self.url = url
        self.fmt = fmt
        self.secret = secret
        self.timeout_s = timeout_s
        self.clock = clock
        self.logger = logger
        self.label = label

    def target(self) -> str:
        if self.secret is None:
            return self.url
        return dingtalk_signed_url(self.url, self.secret, int(self.clock() * 1000))

    def __call__(self, message: Message) -> bool:
        body = json.dumps(webhook_body(self.fmt, message), ensure_ascii=False).encode()
        request = urllib.request.Request(
            self.target(),
            data=body,
            headers={"content-type": "application/json; charset=utf-8"},
            method="POST",
        )
        shown = redacted(self.url)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                reply = response.read()
        except (OSError, ValueError) as exc:
            self.logger.warning("%s %s (%s) failed: %s", self.label, shown, self.fmt, exc)
            return False
        if self.fmt in ROBOT_FORMATS and _errcode(reply):
            self.logger.warning(
                "%s %s (%s) refused the message: %s",
                self.label,
                shown,
                self.fmt,
                reply[:200].decode(errors="replace"),
            )
            return False
        return True


def _errcode(reply: bytes) -> int:
    """A group robot's verdict: 200 with {"errcode": 0, "errmsg": "ok"} or an error code."""
    try:
        return int(json.loads(reply).get("errcode", 0) or 0)
    except (ValueError, AttributeError, TypeError):
        return 0


def redacted(url: str) -> str:
    """The URL without its query (robot URLs carry their access token there)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def parse_webhooks(
    specs: Iterable[str],
    *,
    dingtalk_secret: str | None = None,
    logger: logging.Logger = LOG,
    label: str = "webhook",
) -> list[Webhook]:
    """`[FORMAT=]URL` values (each may hold several, space-separated) as webhooks; a value
    without a known format prefix is a generic URL."""
    hooks = []
    for spec in (w for value in specs for w in value.split()):
        fmt, sep, url = spec.partition("=")
        if not sep or fmt not in WEBHOOK_FORMATS or "://" in fmt:
            fmt, url = "generic", spec
        secret = dingtalk_secret if fmt == "dingtalk" else None
        hooks.append(Webhook(url, fmt, secret=secret, logger=logger, label=label))
    return hooks
