"""`tcscale`: the operator's command line. Each command imports what it needs when it runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, ValidationError

app = typer.Typer(
    help="Scale a WeChat mini-program backend on Tencent Cloud to load-balanced, auto-scaled clusters.",
    no_args_is_help=True,
)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
)
def sandbox(ctx: typer.Context) -> None:
    """A local Tencent Cloud to try the whole job on a laptop (`tcscale sandbox --help`)."""
    # Loaded only by this command: the operator's other commands never load the emulator.
    from sandbox.cli import app as sandbox_app

    sandbox_app(args=ctx.args, prog_name="tcscale sandbox")


def flows() -> dict[str, tuple[Any, type[BaseModel]]]:
    """Every flow `tcscale run` can start: name (as in the Prefect UI) -> (flow, its parameter model)."""
    from flows.cleanup_run import cleanup_run
    from flows.configure_autoscaling import configure_autoscaling
    from flows.parameters import (
        AutoScalingClusterParameters,
        BusinessTierParameters,
        CapacityParameters,
        CapacityPlanParameters,
        CleanupParameters,
        ClusterParameters,
        SessionTierParameters,
    )
    from flows.plan_capacity import plan_capacity
    from flows.scale_out import scale_out_business_tier, scale_out_cluster, scale_out_session_tier
    from flows.set_capacity import set_capacity
    from flows.verify_autoscaling import verify_autoscaling

    return {
        "scale-out-session-tier": (scale_out_session_tier, SessionTierParameters),
        "scale-out-business-tier": (scale_out_business_tier, BusinessTierParameters),
        "scale-out-cluster": (scale_out_cluster, ClusterParameters),
        "cleanup-run": (cleanup_run, CleanupParameters),
        "configure-autoscaling": (configure_autoscaling, AutoScalingClusterParameters),
        "verify-autoscaling": (verify_autoscaling, AutoScalingClusterParameters),
        "set-capacity": (set_capacity, CapacityParameters),
        "plan-capacity": (plan_capacity, CapacityPlanParameters),
    }


@app.command()
def demo(
    count: Annotated[int, typer.Option(min=1, max=20, help="servers to add to each tier")] = 2,
    workdir: Annotated[Path | None, typer.Option(help="where the sandbox and Prefect keep state")] = None,
) -> None:
    """The main job on a laptop: scale the guide's single servers to two clusters in the embedded sandbox."""
    from devstack.demo import run_demo

    if not run_demo(count, workdir):
        typer.echo("demo: a verification failed", err=True)
        raise typer.Exit(1)
    typer.echo("demo: every verification passed")


def _set(tree: dict[str, Any], dotted: str, raw: str) -> None:
    *parents, leaf = dotted.split(".")
    for name in parents:
        tree = tree.setdefault(name, {})
    try:
        tree[leaf] = json.loads(raw)  # numbers, booleans, lists, objects
    except ValueError:
        tree[leaf] = raw  # a plain string


@app.command()
def run(
    flow: Annotated[
        str,
        typer.Argument(
            help="scale-out-session-tier, scale-out-business-tier, scale-out-cluster, cleanup-run, "
            "configure-autoscaling, verify-autoscaling, set-capacity, plan-capacity"
        ),
    ],
    params_file: Annotated[Path | None, typer.Option("--params", help="JSON file of the flow's parameters")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="dotted.name=value, repeatable")] = None,
) -> None:
    """Run a flow against whatever cloud is configured (TCSCALE_* environment, see README)."""
    known = flows()
    if flow not in known:
        raise typer.BadParameter(f"unknown flow {flow!r}; one of: {', '.join(known)}")
    function, model = known[flow]
    values: dict[str, Any] = json.loads(params_file.read_text()) if params_file else {}
    for item in param or []:
        name, sep, raw = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--param {item!r}: expected dotted.name=value")
        _set(values, name, raw)
    try:
        params = model.model_validate(values)
    except ValidationError as error:
        typer.echo(f"invalid parameters for {flow}:\n{error}", err=True)
        raise typer.Exit(2) from None
    result = function(params)
    outcomes = result if isinstance(result, list) else [result]
    for outcome in outcomes:
        typer.echo(getattr(outcome, "report", "") or outcome.model_dump_json(indent=2))


@app.command()
def chatops(
    host: Annotated[str | None, typer.Option(help="listen address (default TCSCALE_CHATOPS_HOST, 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="listen port (default TCSCALE_CHATOPS_PORT, 8787)")] = None,
) -> None:
    """The chatops bridge: signed chat commands (WeCom, generic webhook) -> deployment runs; see README."""
    from chatops.app import serve
    from chatops.settings import ChatopsConfigError

    try:
        serve(host, port)
    except ChatopsConfigError as error:
        typer.echo(f"chatops: {error}", err=True)
        raise typer.Exit(2) from None


@app.command()
def up(
    workdir: Annotated[Path, typer.Option(help="state and logs of the stack (kept across runs)")] = Path(
        "~/.tcscale/up"
    ),
    count: Annotated[int, typer.Option(min=1, max=20, help="servers the declaration adds to each tier")] = 2,
    server_port: Annotated[int | None, typer.Option(help="Prefect server and UI (default: a free port)")] = None,
    sandbox_port: Annotated[int | None, typer.Option(help="the sandbox's API (default: a free port)")] = None,
    bridge_port: Annotated[int | None, typer.Option(help="the chatops bridge (default: a free port)")] = None,
    ssh_port: Annotated[int | None, typer.Option(help="the sandbox servers' SSH port (default 22, else 2222)")] = None,
    app_port: Annotated[int | None, typer.Option(help="where the sandbox serves real port 80")] = None,
) -> None:
    """The whole local stack: Prefect server + UI, the seeded sandbox, the deployments served, the chat bridge."""
    from devstack.up import UpOptions, run_up

    ports = (server_port, sandbox_port, bridge_port, ssh_port, app_port)
    raise typer.Exit(run_up(UpOptions(workdir.expanduser().absolute(), count, *ports)))


@app.command()
def setup(
    cluster: Annotated[
        Path | None,
        typer.Option(
            "--cluster",
            envvar="TCSCALE_CLUSTER_FILE",
            help="the cluster declaration (YAML/JSON) to store in the Prefect Variable tcscale-cluster",
        ),
    ] = None,
) -> None:
    """Idempotently create what the Prefect server in PREFECT_API_URL needs: Secret blocks (from TCSCALE_* env or
    *_FILE files, never echoed), the process work pool tcscale, the tier limits, the variable tcscale-cluster."""
    import os

    from deployments.setup import SetupError, run_setup
    from flows.declaration import DeclarationError

    try:
        lines = run_setup(cluster, os.environ)
    except (SetupError, DeclarationError) as error:
        typer.echo(f"setup: {error}", err=True)
        raise typer.Exit(2) from None
    for line in lines:
        typer.echo(line)


@app.command()
def serve() -> None:
    """Serve every deployment with its schedules in this process, against the real Prefect server in
    PREFECT_API_URL (the lunch-peak schedules from the cluster declaration); stopping it pauses nothing."""
    from deployments.serve import NoServer, serve_all
    from flows.declaration import DeclarationError

    try:
        serve_all()
    except (NoServer, DeclarationError) as error:
        typer.echo(f"serve: {error}", err=True)
        raise typer.Exit(2) from None
