"""`tcscale`: the operator's command line."""

import typer

from sandbox.cli import app as sandbox_app

app = typer.Typer(
    help="Scale a WeChat mini-program backend on Tencent Cloud to load-balanced, auto-scaled clusters.",
    no_args_is_help=True,
)
# The local Tencent Cloud ships with the tool so that anyone can try the whole job on a laptop.
app.add_typer(sandbox_app, name="sandbox")
