"""tasks/health.py's default checks against guests that serve only the real apps' routes (no health endpoint).

The business server of the guide runs the node demo, tomcat and the IIS site (see test_apps.py's `guide`).
"""

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fabric import Connection

from tasks import config_rewrite, remote
from tasks.health import HealthCheck, probe_app_up, probe_auth, probe_session_reach
from tests.dataplane.test_balancers import wait_for
from tests.tasks.test_apps import PROFILES, admit, guide, profile_of, served_port, ssh_settings

__all__ = ["guide"]  # the fixture, shared with test_apps.py

DEFAULTS = HealthCheck()
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def business(guide: dict[str, Any]) -> Iterator[Connection]:
    host = guide["business_server"]["private_ip"]
    with remote.session(host, ssh_settings(guide), profile_of("node-pm2")) as conn:
        yield conn


def test_the_defaults_are_the_real_apps_answers() -> None:
    assert (DEFAULTS.up_path, DEFAULTS.up_status, DEFAULTS.up_text) == (
        "/login",
        200,
        "F2C224D4-2BCE-4C64-AF9F-A6D872000D1A",
    )
    assert (DEFAULTS.session_path, DEFAULTS.session_text, DEFAULTS.auth_path, DEFAULTS.auth_port) == (
        "/user",
        "60012",
        "/mina_auth/",
        80,
    )
    assert {name: DEFAULTS.port_for(profile_of(name)) for name in PROFILES} == {
        "node-pm2": 5757,
        "java-tomcat": 8080,
        "dotnet-iis": 80,
    }
    assert HealthCheck(app_port=8000).port_for(profile_of("node-pm2")) == 8000


@pytest.mark.parametrize("name", PROFILES)
def test_default_checks_pass_for_each_runtime(guide: dict[str, Any], name: str) -> None:
    profile = profile_of(name)
    host, port = guide["business_server"]["private_ip"], served_port(guide, profile)
    up = probe_app_up(host, port, DEFAULTS)
    assert up.ok and up.status == 200, up.detail
    reach = probe_session_reach(host, port, DEFAULTS)
    assert reach.ok, reach.detail
    assert reach.detail.startswith("reaches its session service: ") and "60012" in reach.detail


def test_a_dead_loaded_auth_url_fails_the_session_probe_not_the_up_probe(
    guide: dict[str, Any], business: Connection
) -> None:
    profile = profile_of("node-pm2")
    host, port = guide["business_server"]["private_ip"], served_port(guide, profile)
    dead = "http://" + guide["subnet"]["cidr_block"].rsplit(".", 1)[0] + ".250/mina_auth/"
    config_rewrite.rewrite_sdk_config(business, profile.config_path, "authServerUrl", dead)
    assert probe_session_reach(host, port, DEFAULTS).ok  # rewritten, not yet loaded: the app still reaches
    remote.restart(business, profile)

    def settled() -> Any:
        probe = probe_session_reach(host, port, DEFAULTS)
        return probe if probe.status == 200 and not probe.ok else None

    failed = wait_for(settled, "the restarted app to answer without reaching its session service")
    assert "does not reach its session service" in failed.detail and "ECONNREFUSED" in failed.detail
    assert probe_app_up(host, port, DEFAULTS).ok


def test_a_page_without_the_expected_text_is_not_up(guide: dict[str, Any]) -> None:
    profile = profile_of("node-pm2")
    host, port = guide["business_server"]["private_ip"], served_port(guide, profile)
    home = probe_app_up(host, port, DEFAULTS.model_copy(update={"up_path": "/"}))
    assert not home.ok and "without 'F2C224D4" in home.detail
    missing = probe_app_up(host, port, DEFAULTS.model_copy(update={"up_path": "/health"}))
    assert not missing.ok and missing.status == 404  # the real apps have no health endpoint


def test_probe_auth_needs_a_well_formed_ma_answer_and_an_admitting_group(guide: dict[str, Any], client: Any) -> None:
    session = guide["session_server"]
    url = f"{session['url']}/mina_auth/"
    refused = probe_auth(url, timeout=3)  # the session group admits only the business servers
    assert not refused.ok and refused.detail.startswith("no answer: ")
    admit(client, guide["security_groups"]["session"], 80, "0.0.0.0/0")
    answered = probe_auth(url, timeout=3)  # mina_auth answers with no Content-Type
    assert answered.ok and answered.status == 200, answered.detail
    assert answered.body is not None and answered.body["returnCode"] == 60012  # alphanumeric made-up ids
    assert answered.detail == "MA answer returnCode 60012 (AUTH_FAIL)"
    business = guide["business_server"]
    not_ma = probe_auth(f"{business['url']}/login", timeout=3)
    assert not not_ma.ok and not_ma.detail.startswith("not an MA answer")


# These start and seed the sandbox on purpose (the laptop's stand-in for Tencent Cloud), never a real cloud.
SANDBOX_HARNESSES = {"devstack/demo.py", "devstack/up.py", "devstack/up_inputs.py", "devstack/rehearsal.py"}
# Our own services' health routes (Prefect's /api/health, the chat bridge's /health): not an app's or the cloud's.
OWN_SERVICES = {"devstack/prefect_server.py", "chatops/app.py"}


def test_no_sandbox_only_path_in_the_product() -> None:
    """The real apps have no /health and the real cloud no /_sandbox: no product default may use them."""
    pattern = re.compile(r"/health\b|/_sandbox")
    offenders = []
    for folder in ("flows", "tasks", "deployments"):
        for path in sorted((REPO / folder).rglob("*.py")):
            name = path.relative_to(REPO).as_posix()
            if name in SANDBOX_HARNESSES:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line) and not (name in OWN_SERVICES and "/_sandbox" not in line):
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    for config in ("prefect.yaml",):
        text = (REPO / config).read_text()
        offenders += [f"{config}: {m.group(0)}" for m in pattern.finditer(text)]
    assert not offenders, "\n".join(offenders)
