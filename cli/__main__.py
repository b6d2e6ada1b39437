"""`python -m cli ...`: the `tcscale` command line (what `tcscale up` starts its children with)."""

from cli.main import app

app(prog_name="tcscale")
