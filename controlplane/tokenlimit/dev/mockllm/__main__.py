"""`python -m tokenlimit.dev.mockllm ...`: the same command as `tokenlimit mock-llm`."""

from tokenlimit.cli.run import mock_llm

mock_llm(prog_name="python -m tokenlimit.dev.mockllm")
