"""What `tcscale up` gives its parts, and the chat commands it prints: the stack's generated secrets, the sandbox
seeded with the guide's starting point, that seed's cluster declaration, the WeCom group robot's env for the bridge
(from the shell's settings), and `curl` lines signed for the bridge's generic route.

The stack itself (its children, their start order, their stop) is devstack/up.py.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

TRY_USER, TRY_CHAT = "you", "laptop"  # the allowlist of the local bridge lets this user run everything here

# The WeCom group robot's settings `tcscale up` passes to the bridge: its secrets (each also as <VAR>_FILE, as for
# `tcscale setup`, which seeds their Secret blocks) and its aibotid; then the optional ones.
ROBOT_SECRETS = ("TCSCALE_CHATOPS_WECOM_ROBOT_TOKEN", "TCSCALE_CHATOPS_WECOM_ROBOT_AES_KEY")
ROBOT_ID = "TCSCALE_CHATOPS_WECOM_ROBOT_ID"
ROBOT_OPTIONAL = ("TCSCALE_CHATOPS_WECOM_ROBOT_RECEIVE_ID", "TCSCALE_CHATOPS_WECOM_ROBOT_RESPONSE_BASE")


class StackError(Exception):
    """A part of the stack did not come up, or died; the message says which and where its log is."""


def local_secrets(path: Path) -> dict[str, str]:
    """The stack's generated secrets (sandbox API key pair, chat signing secret): made once, mode 0600."""
    if path.exists():
        return json.loads(path.read_text())
    values = {
        "sandbox_secret_id": "AKID" + secrets.token_hex(16),
        "sandbox_secret_key": secrets.token_hex(16),
        "chat_signing_secret": secrets.token_urlsafe(32),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(values, file)
    return values


def seed_sandbox(url: str, key_file: Path) -> dict[str, Any]:
    """The guide's starting point (`POST /_sandbox/seed`) plus every server's known_hosts lines."""
    response = httpx.post(f"{url}/_sandbox/seed", json={"key_file": str(key_file)}, timeout=120)
    if response.status_code != 200:
        raise StackError(f"the sandbox's seed answered {response.status_code}: {response.text}")
    seed: dict[str, Any] = response.json()
    servers = httpx.get(f"{url}/_sandbox/servers", timeout=30).json()["servers"]
    seed["known_hosts"] = [line for server in servers for line in server["known_hosts"]]
    return seed


def wecom_robot_env(env: Mapping[str, str]) -> dict[str, str]:
    """The bridge's env that enables the WeCom group robot's route, from the shell's robot settings; {} when none
    is set; a StackError naming what is missing (never a value) when only some are."""
    from deployments.setup import SetupError, secret_value

    found: dict[str, str] = {}
    missing = []
    for var in ROBOT_SECRETS:
        try:
            value, _ = secret_value(env, var)
        except SetupError as error:
            raise StackError(str(error)) from None
        if value is None:
            missing.append(f"{var} (or {var}_FILE)")
        else:
            found[var] = value
    if env.get(ROBOT_ID):
        found[ROBOT_ID] = env[ROBOT_ID]
    else:
        missing.append(f"{ROBOT_ID} (the robot's aibotid)")
    if not found:
        return {}
    if missing:
        raise StackError("the WeCom group robot is half configured: set " + ", ".join(missing) + " (or none of them)")
    optional = {var: env[var] for var in ROBOT_OPTIONAL if var in env}
    return {**found, **optional, "TCSCALE_CHATOPS_PLATFORMS": "generic,wecom-robot"}


def write_declaration(seed: dict[str, Any], count: int, path: Path) -> Path:
    from devstack.demo import seed_declaration
    from flows.declaration import dump_declaration

    path.write_text(json.dumps(dump_declaration(seed_declaration(seed, count)), indent=2))
    return path


def chat_command(bridge_url: str, secret: str, text: str) -> str:
    """A `curl` line that posts `text` to the bridge's generic route, signed now (valid for the bridge's window)."""
    from chatops.signing import sign_generic

    message = {"message_id": f"try-{secrets.token_hex(6)}", "user": TRY_USER, "chat": TRY_CHAT, "text": text}
    body = json.dumps(message)
    headers = sign_generic(secret, body.encode(), int(time.time()))
    parts = ["curl", "-sS", "-X", "POST", f"{bridge_url}/chat/generic", "-H", "Content-Type: application/json"]
    for name, value in headers.items():
        parts += ["-H", f"{name}: {value}"]
    return shlex.join([*parts, "--data-binary", body])
