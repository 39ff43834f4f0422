"""`tokenlimit jobs`: the async jobs service (OpenAI Files + Batches, Prefer: respond-async)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from tokenlimit.jobs.credentials import CredentialBox

PASSWORD_ENV = "TOKENLIMIT_REDIS_PASSWORD"
#: Names the key file that encrypts stored credentials (jobs/credentials.py; kept here, with
#: PASSWORD_ENV, so `--help` needs no cryptography import).
CREDENTIAL_KEY_FILE_ENV = "TOKENLIMIT_JOBS_CREDENTIAL_KEY_FILE"


@click.command("jobs")
@click.option("--gateway", required=True, metavar="URL", help="The gateway every job runs through.")
@click.option(
    "--redis",
    "redis_url",
    default="redis://127.0.0.1:6379/0",
    show_default=True,
    metavar="URL",
    help="Queue, files, results and state (the password: --redis-password-file or "
    f"${PASSWORD_ENV}, never the URL).",
)
@click.option("--redis-password-file", default=None, metavar="FILE")
@click.option(  # the credentials a job keeps are encrypted with these keys
    "--credential-key-file",
    envvar=CREDENTIAL_KEY_FILE_ENV,
    show_envvar=True,
    default=None,
    metavar="FILE",
    help="Required: Fernet keys, one a line, that encrypt the credentials each job keeps in "
    "Redis; the first encrypts, all decrypt (rotation: add the new key first).",
)
@click.option("--listen", type=click.IntRange(0, 65535), default=8090, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--workers", type=click.IntRange(0, 256), default=4, show_default=True)
@click.option(
    "--credential-header",
    "credential_headers",
    multiple=True,
    metavar="NAME",
    help="A header forwarded to the gateway with every job (repeatable; default: "
    "authorization, api-key, x-api-key). Kept only while the job lives.",
)
@click.option(
    "--interactive-share",
    type=click.FloatRange(0.0, 1.0, max_open=True),
    default=0.0,
    show_default=True,
    help="Share of each budget left to interactive traffic (needs show_limit_headers).",
)
@click.option(
    "--claim-idle-ms",
    type=click.IntRange(min=100),
    default=30_000,
    show_default=True,
    help="A job a dead worker held is taken over after this long.",
)
@click.option("--max-file-bytes", type=click.IntRange(min=1), default=20 * 1024 * 1024)
@click.option("--max-lines", type=click.IntRange(min=1), default=50_000, show_default=True)
@click.option("--max-line-bytes", type=click.IntRange(min=1), default=1024 * 1024)
@click.option(
    "--retention-s",
    type=click.IntRange(min=60),
    default=7 * 86400,
    show_default=True,
    help="How long files, batches and results are kept after their last change.",
)
def jobs_command(
    gateway: str,
    redis_url: str,
    redis_password_file: str | None,
    credential_key_file: str | None,
    listen: int,
    host: str,
    workers: int,
    credential_headers: tuple[str, ...],
    interactive_share: float,
    claim_idle_ms: int,
    max_file_bytes: int,
    max_lines: int,
    max_line_bytes: int,
    retention_s: int,
) -> None:
    """Run batch and async work through the gateway, under each caller's own budget."""
    import os

    from pydantic import ValidationError

    from tokenlimit.jobs.config import DEFAULT_CREDENTIAL_HEADERS, JobsConfig

    password = os.environ.get(PASSWORD_ENV)
    if redis_password_file is not None:
        try:
            password = Path(redis_password_file).read_text().strip()
        except OSError as exc:
            raise click.BadParameter(str(exc), param_hint="--redis-password-file") from None
    try:
        config = JobsConfig(
            gateway=gateway,
            redis=redis_url,
            redis_password=password or None,
            host=host,
            port=listen,
            workers=workers,
            credential_headers=credential_headers or DEFAULT_CREDENTIAL_HEADERS,
            interactive_share=interactive_share,
            claim_idle_ms=claim_idle_ms,
            max_file_bytes=max_file_bytes,
            max_lines=max_lines,
            max_line_bytes=max_line_bytes,
            retention_s=retention_s,
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise click.UsageError(problems) from None
    box = _credential_box(credential_key_file)
    from tokenlimit.jobs.service import run

    try:
        run(config, box)
    except OSError as exc:
        raise click.ClickException(
            f"tokenlimit jobs: cannot listen on {host}:{listen}: {exc}"
        ) from None


def _credential_box(path: str | None) -> CredentialBox:
    """The keys, or a usage error naming the file and why: the service never keeps a
    credential unencrypted, so it does not start without a key."""
    from tokenlimit.jobs import credentials

    if not path:
        raise click.UsageError(
            "tokenlimit jobs needs a key to encrypt the credentials it keeps in Redis: "
            f"--credential-key-file FILE or ${CREDENTIAL_KEY_FILE_ENV} (one Fernet key a "
            f"line; make one with: {credentials.MAKE_KEY})"
        )
    try:
        return credentials.load_key_file(Path(path))
    except credentials.KeyFileError as exc:
        raise click.BadParameter(str(exc), param_hint="--credential-key-file") from None
