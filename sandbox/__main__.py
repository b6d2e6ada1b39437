"""`python -m sandbox serve`: the local Tencent Cloud."""

from sandbox.cli import app

app()
