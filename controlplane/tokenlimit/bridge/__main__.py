"""`python -m tokenlimit.bridge ...`: the same command as `tokenlimit bridge` (gateway.py and
the tests start the bridge this way)."""

from tokenlimit.cli.run import bridge_command

bridge_command(prog_name="python -m tokenlimit.bridge")
