"""The sandbox's command line (also mounted as `tcscale sandbox`)."""

from pathlib import Path
from typing import Annotated

import typer

from sandbox.core.clock import ClockSettings, Profile
from sandbox.core.emulated_cloud import DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY, SandboxConfig

app = typer.Typer(help="A local Tencent Cloud: the real SDK and tccli talk to it unmodified.", no_args_is_help=True)


@app.callback()
def main() -> None:
    """A local Tencent Cloud: the real SDK and tccli talk to it unmodified."""


@app.command()
def serve(
    port: Annotated[int, typer.Option(help="TCP port of the API endpoint")] = 9100,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    state_dir: Annotated[Path | None, typer.Option(help="persist state here across restarts")] = None,
    secret_id: Annotated[str, typer.Option(envvar="SANDBOX_SECRET_ID")] = DEFAULT_SECRET_ID,
    secret_key: Annotated[str, typer.Option(envvar="SANDBOX_SECRET_KEY", show_default=False)] = DEFAULT_SECRET_KEY,
    profile: Annotated[str, typer.Option(help="latency profile: instant or realistic")] = "instant",
    time_scale: Annotated[float, typer.Option(help="multiplies realistic latencies")] = 1.0,
    rate_limit: Annotated[int, typer.Option(help="requests/s per action (0: unlimited)")] = 20,
    ssh_port: Annotated[int | None, typer.Option(help="servers' SSH port (default 22 if bindable, else 2222)")] = None,
    app_port: Annotated[int | None, typer.Option(help="serves real port 80 (default 80, else 10080)")] = None,
    dataplane: Annotated[bool, typer.Option(help="run real servers and load balancers")] = True,
    public_pool: Annotated[
        str | None, typer.Option(help="public addresses' network (default: the first free of 127.100.0.0/16, ...)")
    ] = None,
) -> None:
    """Serve the Tencent Cloud API (cvm, vpc, clb, as) and the /_sandbox/ admin API."""
    from sandbox.server import serve as run

    if profile not in Profile.__args__:  # type: ignore[attr-defined]
        raise typer.BadParameter(f"profile must be one of {Profile.__args__}")  # type: ignore[attr-defined]
    config = SandboxConfig(
        host=host,
        port=port,
        state_dir=state_dir,
        secret_id=secret_id,
        secret_key=secret_key,
        rate_limit=rate_limit,
        ssh_port=ssh_port,
        app_port=app_port,
        dataplane=dataplane,
        public_pool=public_pool,
        clock=ClockSettings(profile=profile, time_scale=time_scale),  # type: ignore[arg-type]
    )
    if port and not _free(host, port):
        typer.echo(
            f"sandbox serve: {host}:{port} is already in use (another sandbox, or another service): "
            "choose a free port with --port",
            err=True,
        )
        raise typer.Exit(1)
    typer.echo(f"sandbox: Tencent Cloud API on http://{host}:{port} (profile {profile}, SecretId {secret_id})")
    run(config)


def _free(host: str, port: int) -> bool:
    import socket

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no obstacle
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


@app.command()
def seed(
    endpoint: Annotated[
        str, typer.Option(help="the running sandbox", envvar="SANDBOX_ENDPOINT")
    ] = "http://127.0.0.1:9100",
    key_file: Annotated[Path | None, typer.Option(help="write the key pair's private key here (mode 0600)")] = None,
    region: Annotated[str, typer.Option()] = "ap-guangzhou",
    zone: Annotated[str, typer.Option()] = "ap-guangzhou-3",
    project_id: Annotated[int, typer.Option()] = 1001,
) -> None:
    """Build the guide's starting point (a session server and a business server) in a running sandbox."""
    import json

    import httpx

    body: dict[str, object] = {"region": region, "zone": zone, "project_id": project_id}
    if key_file is not None:
        body["key_file"] = str(key_file.expanduser().absolute())
    url = endpoint.rstrip("/") if "://" in endpoint else f"http://{endpoint.rstrip('/')}"
    try:
        response = httpx.post(f"{url}/_sandbox/seed", json=body, timeout=120)
    except httpx.HTTPError as error:
        typer.echo(f"sandbox seed: cannot reach {url}: {error}", err=True)
        raise typer.Exit(1) from None
    if response.status_code != 200:
        typer.echo(f"sandbox seed failed ({response.status_code}): {response.json().get('error')}", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps(response.json(), indent=2, ensure_ascii=False))
