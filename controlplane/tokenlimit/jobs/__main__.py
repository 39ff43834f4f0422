"""`python -m tokenlimit.jobs ...`: the same command as `tokenlimit jobs`."""

from tokenlimit.cli.jobs import jobs_command

jobs_command(prog_name="tokenlimit jobs")
