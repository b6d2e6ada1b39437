"""`tcscale serve`: every deployment of prefect.yaml, with its schedules, served by this one process.

The deployments are prefect.yaml's (names, descriptions, tags, concurrency limits: one list for both ways in);
the lunch-peak schedules are computed from the cluster declaration (peak extra, times, lead). Schedules never fire
on Prefect's temporary server, so this refuses to start without a real one in PREFECT_API_URL; and it serves with
`pause_on_shutdown=False`, so stopping it does not pause the schedules (runs due meanwhile wait, Late, and a
lunch-peak run that starts too late changes nothing). Every run it starts sends Prefect heartbeats every
`crashes.HEARTBEAT_SECONDS`.
"""

from __future__ import annotations

import importlib
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from flows.declaration import ClusterDeclaration

ROOT = Path(__file__).resolve().parent.parent
PREFECT_YAML = ROOT / "prefect.yaml"


class NoServer(RuntimeError):
    pass


def require_server() -> str:
    """PREFECT_API_URL of a real server, or NoServer saying why."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise NoServer(
            "PREFECT_API_URL is not set: `tcscale serve` needs a real Prefect server (schedules never fire on "
            "Prefect's temporary one). Start one (`prefect server start`, or `tcscale up`) and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    return str(url)


def deployment_specs() -> list[dict[str, Any]]:
    return list(yaml.safe_load(PREFECT_YAML.read_text())["deployments"])


def load_flow(entrypoint: str) -> Any:
    """The flow, ready to serve: `serve` runs each run in a spawned process with the flow cloudpickled by value,
    which keeps only the globals its code names; with `from __future__ import annotations` the parameter model is
    then a name the child cannot resolve ("... is not fully defined"), so the annotations are resolved here."""
    path, _, attribute = entrypoint.partition(":")
    flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), attribute)
    flow.fn.__annotations__ = typing.get_type_hints(flow.fn)
    return flow


def concurrency_limit(value: int | dict[str, Any] | None) -> Any:
    from prefect.client.schemas.objects import ConcurrencyLimitConfig

    return ConcurrencyLimitConfig.model_validate(value) if isinstance(value, dict) else value


def runner_deployments(declaration: ClusterDeclaration | None = None) -> list[Any]:
    """prefect.yaml's deployments as RunnerDeployments; the lunch-peak ones with the declaration's schedules
    (none declared: the default peak, lead 15 min unless measured)."""
    from deployments.lunch_peak import lunch_peak_schedules
    from flows.autoscaling_steps.capacity_schedules import DEPLOYMENT_PREFIX
    from flows.declaration import ClusterDeclaration
    from flows.run_forms import form_parameters, parameter_model

    made = []
    for spec in deployment_specs():
        name: str = spec["name"]
        schedules = None
        if name.startswith(DEPLOYMENT_PREFIX):
            schedules = lunch_peak_schedules(declaration or ClusterDeclaration(), name.removeprefix(DEPLOYMENT_PREFIX))
        flow = load_flow(spec["entrypoint"])
        made.append(
            flow.to_deployment(
                name=name,
                description=spec.get("description"),
                tags=spec.get("tags"),
                schedules=schedules,
                parameters=form_parameters(declaration, parameter_model(flow)) if declaration else None,
                concurrency_limit=concurrency_limit(spec.get("concurrency_limit")),
            )
        )
    return made


def serve_all() -> None:
    """Serve every deployment until interrupted (Ctrl-C / SIGTERM), without pausing the schedules."""
    require_server()
    import os

    from prefect import serve

    from deployments.crashes import heartbeat_env
    from flows.declaration import load_declaration

    # each run's process inherits it: its heartbeats are what `tcscale setup`'s automation watches for (a run
    # whose process dies is marked Crashed and cleaned up); the window there is set for this frequency
    os.environ.update(heartbeat_env())
    serve(*runner_deployments(load_declaration()), pause_on_shutdown=False)
