"""The Prefect UI of `tcscale up`, in headless Chromium from Debian's packages driven by Playwright (never a
downloaded browser): find the `scale-out-cluster` deployment, open its run form and see our parameters; open a
finished run and see its report artifact; every deployment's run form is a few fields on the first screen
(devstack/run_forms.py measures them). `.ci/run` installs the browser; without it (and not in CI) this skips.

TCSCALE_SCREENSHOT=<file.png> keeps the screenshot of the report in the UI (the README's docs/report-in-ui.png).
docs/chart-in-ui.png, a set-capacity report's chart under load, is `python -m devstack.chart_in_ui`'s; this test
checks a configure-autoscaling report's chart with the same `open_chart`.
"""

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from devstack.chart_in_ui import open_chart
from devstack.run_forms import CHROMIUM, CHROMIUM_ARGS, NONE_TEXT, VIEWPORT, WAIT_MS, deployments, measure_form
from tests.devstack.up_support import UpProcess, api, finished, start_run
from tests.sdk import poll


@pytest.fixture(scope="module")
def browser() -> Any:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing in CI: .ci/run installs Debian's chromium (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} is absent: `apt-get install chromium` (Debian's package) to run the browser test")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def our_fields(api_url: str) -> list[re.Pattern[str]]:
    """How the form labels scale-out-cluster's run form (flows/run_forms.py: servers to add per tier, instance type,
    dry run, run key, overrides) and describes them: "<title>" or "<title> (Optional)", then the description."""
    deployment = api("GET", f"{api_url}/deployments/name/scale-out-cluster/cluster").json()
    cluster = deployment["parameter_openapi_schema"]["definitions"]["ClusterScaleOutForm"]["properties"]
    assert {"session_count", "business_count", "run_key", "dry_run", "overrides"} <= set(cluster), cluster
    titles = [field["title"] for field in cluster.values()]
    labels = [re.compile(rf"^{re.escape(title)}( \(Optional\))?$") for title in titles]
    descriptions = [re.compile(re.escape(field["description"])) for field in cluster.values() if "description" in field]
    return labels + descriptions


def open_run_form(page: Any, ui_url: str, fields: list[re.Pattern[str]]) -> None:
    """From the UI's home page, like a user: Deployments -> scale-out-cluster's `cluster` -> Run -> Custom run."""
    page.goto(ui_url)
    page.get_by_role("link", name="Deployments").first.click()
    page.get_by_text("scale-out-cluster").first.wait_for(timeout=WAIT_MS)
    page.get_by_role("link", name="cluster", exact=True).first.click()
    page.get_by_role("button", name="Run").first.click()
    page.get_by_text("Custom run").first.click()
    for field in fields:
        page.get_by_text(field).first.wait_for(timeout=WAIT_MS)


def open_report(page: Any, ui_url: str, api_url: str, run_id: str, tier: str, screenshot: Path) -> str:
    """The finished run's page -> Artifacts -> its report (markdown) -> the rendered report; its text."""
    key = f"scale-out-{tier}-tier-{run_id}"  # flows/shared/report.py: the report's key
    query = {"artifacts": {"key": {"any_": [key]}}}
    (artifact,) = api("POST", f"{api_url}/artifacts/filter", query).json()
    page.goto(f"{ui_url}/v2/runs/flow-run/{run_id}")
    page.get_by_role("tab", name="Artifacts").click(timeout=WAIT_MS)
    page.get_by_text(f"scale-out-{tier}-tier report (succeeded)").first.click(timeout=WAIT_MS)
    page.get_by_role("link", name=artifact["id"][:8]).first.click(timeout=WAIT_MS)  # the report's one version
    for heading in ("Resources", "Configuration changes", "Verification", "Steps"):
        page.get_by_role("heading", name=heading).first.wait_for(timeout=WAIT_MS)
    page.screenshot(path=str(screenshot))
    return str(page.inner_text("body"))


@pytest.mark.timeout(900)
def test_ui_shows_our_run_form_and_a_finished_runs_report(browser: Any, up_stack: UpProcess, tmp_path: Path) -> None:
    stack = up_stack
    # A real small run (the session tier of the seeded sandbox, parameters from the cluster declaration),
    # started first: it runs while the browser looks at the run form.
    run_id = start_run(stack, "scale-out-session-tier/session-tier", {"params": {}})
    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(WAIT_MS)
    open_run_form(page, stack.ui_url, our_fields(stack.api_url))

    run = finished(stack, run_id)
    screenshot = tmp_path / "report-in-ui.png"
    text = open_report(page, stack.ui_url, stack.api_url, run["id"], "session", screenshot)
    assert "scale-out-session-tier (succeeded)" in text
    assert f"run key {run['id']}" in text
    assert "INTERNAL, VIP" in text  # the session tier's new CLB
    if os.environ.get("TCSCALE_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["TCSCALE_SCREENSHOT"])

    # The session tier handed to Auto Scaling: its report's capacity chart is an image the UI really shows.
    configure = start_run(stack, "configure-autoscaling/autoscaling", {"params": {"tiers": ["session"]}})
    configured = finished(stack, configure, timeout=300)
    shot = tmp_path / "chart-in-ui.png"
    report = "configure-autoscaling report (succeeded)"
    chart = open_chart(page, stack.ui_url, stack.api_url, f"configure-autoscaling-{configured['id']}", report, shot)
    assert chart["complete"] and (chart["width"], chart["height"]) == (760, 330), chart  # decoded, not a broken image
    assert chart["box"] and chart["box"]["width"] > 300 and chart["box"]["height"] > 100, chart
    assert chart["alt"].startswith("session tier: asg-") and "in service" in chart["alt"], chart


SECRETISH = ("known_hosts", "known hosts", "host key", "key file", "key_file", "password")


def runs_of(stack: UpProcess, deployment_id: str) -> list[dict[str, Any]]:
    query = {"deployments": {"id": {"any_": [deployment_id]}}}
    return list(api("POST", f"{stack.api_url}/flow_runs/filter", query).json())


def test_every_run_form_is_a_few_fields_on_the_first_screen(browser: Any, up_stack: UpProcess) -> None:
    """Issue 15: the forms were 35 to 172 fields, 5,162 to 23,459 px, up to 56 'Property is type None'."""
    stack = up_stack
    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(WAIT_MS)
    found = deployments(stack.api_url)
    assert len(found) == 10, found
    for name, deployment_id in found:
        form = measure_form(page, stack.ui_url, deployment_id, name)
        assert 1 <= len(form.fields) <= 6 and form.first_screen == form.fields, form
        assert form.fields[-1].startswith("Overrides"), form  # the rest: one optional object
        assert form.none_properties == 0 and NONE_TEXT not in form.text, form
        assert not [word for word in SECRETISH if word in form.text.lower()], form
        assert form.height < VIEWPORT["height"] * 1.5, form  # was 5,162 px at least

    # What the form sends is a run: scale-out-cluster's, a dry run of 3 more business servers, filled in and submitted.
    cluster = dict(found)["scale-out-cluster/cluster"]
    earlier = {run["id"] for run in runs_of(stack, cluster)}
    measure_form(page, stack.ui_url, cluster, "scale-out-cluster/cluster")
    page.get_by_role("switch").first.click()  # Dry run: the form's one toggle
    business = page.locator(".schema-form-property").filter(has_text="Business servers to add").last
    business.locator("input").fill("3")
    page.get_by_role("button", name="Submit").click()
    new = poll(lambda: [r for r in runs_of(stack, cluster) if r["id"] not in earlier], what="the submitted run",
               timeout=WAIT_MS / 1000)  # fmt: skip
    run = finished(stack, new[0]["id"])
    assert run["parameters"]["params"] == {"session_count": 2, "business_count": 3, "instance_type": "",
                                           "dry_run": True, "run_key": "", "overrides": {}}  # fmt: skip
    query = {"artifacts": {"key": {"any_": [f"scale-out-business-tier-{run['id']}"]}}}
    (plan,) = api("POST", f"{stack.api_url}/artifacts/filter", query).json()
    assert "(plan)" in plan["data"] and "launch 3 x" in plan["data"], plan["data"]
