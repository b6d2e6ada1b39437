"""`tcscale setup`: what a Prefect server needs before tcscale's deployments run on it, created idempotently.

Secret blocks for the cloud credentials, the SSH key and the chat bridge's secrets (each read from an env variable
or from the file an env variable names; a value is never printed), the `process` work pool `tcscale`, the global
concurrency limits that hold one scale operation per tier, the automations that mark a dead run Crashed and start
its cleanup-run (deployments/crashes.py), and the Variable `tcscale-cluster` (the cluster declaration) from
`--cluster FILE`. A second run creates nothing twice: each line says created, updated or exists.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flows.declaration import (
    CLUSTER_VARIABLE,
    ClusterDeclaration,
    DeclarationError,
    dump_declaration,
    read_declaration_file,
    variable_size_problem,
)
from flows.run_forms import form_parameters, parameter_model
from flows.shared.tier_lock import ensure_limit, limit_name

WORK_POOL = "tcscale"
TIER_LIMITS = tuple(limit_name(tier) for tier in ("session", "business"))  # the tier locks' limits
# Secret block -> the env variable holding its value (or, with _FILE, naming a file holding it).
SECRET_BLOCKS = {
    "tcscale-secret-id": "TCSCALE_SECRET_ID",
    "tcscale-secret-key": "TCSCALE_SECRET_KEY",
    "tcscale-ssh-key": "TCSCALE_SSH_KEY",
    "tcscale-chat-signing-secret": "TCSCALE_CHATOPS_SIGNING_SECRET",
    "tcscale-wecom-token": "TCSCALE_CHATOPS_WECOM_TOKEN",
    "tcscale-wecom-aes-key": "TCSCALE_CHATOPS_WECOM_AES_KEY",
    "tcscale-wecom-corp-secret": "TCSCALE_CHATOPS_WECOM_CORP_SECRET",
    "tcscale-wecom-robot-token": "TCSCALE_CHATOPS_WECOM_ROBOT_TOKEN",
    "tcscale-wecom-robot-aes-key": "TCSCALE_CHATOPS_WECOM_ROBOT_AES_KEY",
}


class SetupError(RuntimeError):
    pass


def secret_value(env: Mapping[str, str], var: str) -> tuple[str | None, str]:
    """(value, where it came from) of `var`, else of the file `<var>_FILE` names; (None, why) when neither."""
    if env.get(var):
        return env[var], f"${var}"
    file = env.get(f"{var}_FILE")
    if file:
        path = Path(file).expanduser()
        try:
            return path.read_text().strip("\n") if var != "TCSCALE_SSH_KEY" else path.read_text(), str(path)
        except OSError as error:
            raise SetupError(f"{var}_FILE={path}: cannot read it: {error.strerror or error}") from None
    return None, f"neither {var} nor {var}_FILE is set"


def ensure_secret(name: str, value: str) -> str:
    from prefect.blocks.system import Secret

    try:
        existing: Any = Secret.load(name).get()
    except ValueError:  # no such block
        existing = None
    if existing == value:
        return "exists"
    Secret(value=value).save(name, overwrite=True)
    return "created" if existing is None else "updated"


def setup_secrets(env: Mapping[str, str]) -> list[str]:
    lines = []
    for block, var in SECRET_BLOCKS.items():
        value, source = secret_value(env, var)
        if value is None:
            lines.append(f"secret block {block}: skipped ({source})")
            continue
        lines.append(f"secret block {block}: {ensure_secret(block, value)} (from {source})")
    return lines


def setup_work_pool(client: Any) -> str:
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    try:
        pool = client.read_work_pool(WORK_POOL)
    except ObjectNotFound:
        template = ProcessWorker.get_default_base_job_template()
        client.create_work_pool(WorkPoolCreate(name=WORK_POOL, type="process", base_job_template=template))
        return f"work pool {WORK_POOL} (process): created"
    if pool.type != "process":
        return f"work pool {WORK_POOL}: exists but of type {pool.type!r}, not process: delete it and run setup again"
    return f"work pool {WORK_POOL} (process): exists"


def setup_limits(client: Any) -> list[str]:
    return [f"global concurrency limit {name} (1): {ensure_limit(client, name)}" for name in TIER_LIMITS]


def setup_cluster_variable(cluster_file: Path) -> str:
    from prefect.variables import Variable

    value = dump_declaration(read_declaration_file(cluster_file))
    problem = variable_size_problem(value)
    if problem:
        raise SetupError(f"{cluster_file}: {problem}")
    existing = Variable.get(CLUSTER_VARIABLE, default=None)
    if isinstance(existing, str):
        with contextlib.suppress(ValueError):
            existing = json.loads(existing)
    if existing == value:
        return f"variable {CLUSTER_VARIABLE}: exists (same as {cluster_file})"
    Variable.set(CLUSTER_VARIABLE, value, overwrite=True)
    return f"variable {CLUSTER_VARIABLE}: {'created' if existing is None else 'updated'} from {cluster_file}"


def setup_deployment_parameters(client: Any, declaration: ClusterDeclaration) -> list[str]:
    """Each deployed deployment's default parameters from the declaration (`form_parameters`: what the UI's run form
    starts from). Deployments not on the server yet are skipped: run setup again after `prefect deploy --all`."""
    from prefect.client.schemas.actions import DeploymentUpdate
    from prefect.exceptions import ObjectNotFound

    from deployments.serve import deployment_specs, load_flow

    lines = []
    for spec in deployment_specs():
        flow = load_flow(spec["entrypoint"])
        name = f"{flow.name}/{spec['name']}"
        try:
            deployment = client.read_deployment_by_name(name)
        except ObjectNotFound:
            lines.append(f"deployment {name}: skipped (not deployed yet: run setup again after `prefect deploy --all`)")
            continue
        wanted = form_parameters(declaration, parameter_model(flow))
        if deployment.parameters == wanted:
            lines.append(f"deployment {name}: parameters from the declaration: exist")
        else:
            client.update_deployment(deployment.id, DeploymentUpdate(parameters=wanted))
            lines.append(f"deployment {name}: parameters from the declaration: updated")
    return lines


def run_setup(cluster_file: Path | None, env: Mapping[str, str]) -> list[str]:
    """Everything the server needs, idempotently, against PREFECT_API_URL; the lines say what was done.
    Raises SetupError (or DeclarationError for a bad cluster file) before changing anything it can check first."""
    from prefect.client.orchestration import get_client

    from deployments.crashes import setup_automations

    if cluster_file is not None:
        declaration = read_declaration_file(cluster_file)  # a bad file fails before anything is changed
        problem = variable_size_problem(dump_declaration(declaration))
        if problem:
            raise SetupError(f"{cluster_file}: {problem}")
    for var in SECRET_BLOCKS.values():
        secret_value(env, var)  # an unreadable file too
    lines = setup_secrets(env)
    with get_client(sync_client=True) as client:
        lines.append(setup_work_pool(client))
        lines += setup_limits(client)
        lines += setup_automations(client)
    if cluster_file is not None:
        lines.append(setup_cluster_variable(cluster_file))
        with get_client(sync_client=True) as client:
            lines += setup_deployment_parameters(client, declaration)
    else:
        lines.append(f"variable {CLUSTER_VARIABLE}: skipped (no --cluster FILE)")
    return lines


__all__ = ["DeclarationError", "SetupError", "run_setup"]
