"""The OpenAI batch formats: input lines checked against the bounds, output lines built.

Input (one JSON object a line)::

    {"custom_id": "req-1", "method": "POST", "url": "/v1/chat/completions", "body": {...}}

Output and error files carry, in input order, one line per request::

    {"id": "batch_req_...", "custom_id": "req-1",
     "response": {"status_code": 200, "request_id": "...", "body": {...}}, "error": null}

Successful (2xx) answers go to the output file; refusals for good (4xx other than 429) and
requests the completion window ran out on go to the error file, as OpenAI does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tokenlimit.jobs.config import JobsConfig


@dataclass(frozen=True)
class JobError(Exception):
    """A request the API refuses; becomes OpenAI's error JSON with this status."""

    status: int
    code: str
    message: str
    param: str | None = None

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": "invalid_request_error",
                "param": self.param,
                "code": self.code,
            }
        }


def check_input(content: bytes, config: JobsConfig) -> list[str]:
    """The file's request lines, or JobError naming the first bound or rule it breaks."""
    if len(content) > config.max_file_bytes:
        raise JobError(
            413,
            "file_too_large",
            f"the file has {len(content)} bytes; at most {config.max_file_bytes} are accepted",
            "file",
        )
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JobError(400, "invalid_file", f"the file is not UTF-8: {exc}", "file") from None
    lines: list[str] = []
    seen: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        if len(lines) == config.max_lines:
            raise JobError(
                400,
                "too_many_lines",
                f"the file has more than {config.max_lines} request lines",
                "file",
            )
        size = len(raw.encode())
        if size > config.max_line_bytes:
            raise JobError(
                400,
                "line_too_large",
                f"line {number} has {size} bytes; at most {config.max_line_bytes} are accepted",
                "file",
            )
        request = _request(raw, number)
        custom_id = request["custom_id"]
        if custom_id in seen:
            raise JobError(
                400, "duplicate_custom_id", f"line {number}: custom_id {custom_id!r} repeats"
            )
        seen.add(custom_id)
        lines.append(raw)
    if not lines:
        raise JobError(400, "empty_file", "the file holds no request lines", "file")
    return lines


def check_endpoint(lines: list[str], endpoint: str) -> None:
    """Every line must ask for the batch's endpoint (OpenAI refuses a mixed file too)."""
    for number, raw in enumerate(lines, start=1):
        url = json.loads(raw)["url"]
        if url != endpoint:
            raise JobError(
                400,
                "mismatched_endpoint",
                f"request {number} is for {url!r}, the batch's endpoint is {endpoint!r}",
                "endpoint",
            )


def _request(raw: str, number: int) -> dict[str, Any]:
    try:
        request = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise JobError(400, "invalid_json", f"line {number} is not JSON: {exc}", "file") from None
    if not isinstance(request, dict):
        raise JobError(400, "invalid_request", f"line {number} is not a JSON object", "file")
    for name, kind in (("custom_id", str), ("method", str), ("url", str), ("body", dict)):
        if not isinstance(request.get(name), kind):
            raise JobError(
                400,
                "invalid_request",
                f"line {number}: `{name}` must be a {'string' if kind is str else 'JSON object'}",
                "file",
            )
    if request["method"].upper() != "POST":
        raise JobError(400, "invalid_method", f"line {number}: method must be POST", "file")
    if not request["url"].startswith("/"):
        raise JobError(400, "invalid_url", f"line {number}: url must be a path like /v1/...")
    if request["body"].get("stream") is True:
        raise JobError(
            400, "stream_unsupported", f"line {number}: streaming is not supported in a batch"
        )
    return request


def output_line(
    batch_id: str, index: int, custom_id: str, status: int, body: Any, request_id: str
) -> dict[str, Any]:
    return {
        "id": f"batch_req_{batch_id.removeprefix('batch_')}_{index}",
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": request_id, "body": body},
        "error": None,
    }


def error_line(
    batch_id: str, index: int, custom_id: str, code: str, message: str
) -> dict[str, Any]:
    return {
        "id": f"batch_req_{batch_id.removeprefix('batch_')}_{index}",
        "custom_id": custom_id,
        "response": None,
        "error": {"code": code, "message": message},
    }


def decode_body(text: str) -> Any:
    """An upstream's answer as JSON when it is JSON, else as the text it is."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
