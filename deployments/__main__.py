"""`python -m deployments ...`: the `tcscale` command line (what `tcscale up` starts its children with)."""

from deployments.cli import app

app(prog_name="tcscale")
