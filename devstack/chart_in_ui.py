"""A real set-capacity report's capacity chart, as the Prefect UI shows it, in Chromium: docs/chart-in-ui.png.

    uv run python -m devstack.chart_in_ui docs/chart-in-ui.png      # ~5 minutes

A Prefect server of its own (with its UI) and the embedded sandbox seeded with the guide's starting point; then, as
an operator would: `scale-out-session-tier` (2 more session servers), `configure-autoscaling` of the session tier,
and `set-capacity` +2 while requests reach the session tier through its CLB (what the chart's CPU line reads from
Cloud Monitor) and the sandbox's clock is realistic (a launch takes LAUNCH_SCALE x 30 s, so the chart shows the new
servers desired, then in service, then healthy behind the CLB). Then, in headless Debian Chromium (as
devstack/run_forms.py drives it): the run's page -> Artifacts -> its report -> the chart, scrolled into the window,
saved as a PNG. `open_chart` is what tests/devstack/test_browser.py checks a report's chart with.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from devstack.run_forms import CHROMIUM, CHROMIUM_ARGS, WAIT_MS

LAUNCH_SCALE = 6.0  # the realistic clock's time scale during set-capacity: a launch takes 3 minutes
# Requests per second through the session CLB, rising by RISE a minute as a lunch rush would (each costs 50 ms of
# CPU in the sandbox's model, sandbox/core/metrics.py: 8/s on 3 servers reads ~14 %, 24/s ~41 %).
START_RATE, RISE, TOP_RATE = 8.0, 8.0, 24.0
WINDOW = {"width": 1280, "height": 900}  # the UI's sidebar, the report's column and the whole chart: ~150 KB


def open_chart(page: Any, ui_url: str, api_url: str, artifact_key: str, report: str, shot: Path) -> dict[str, Any]:
    """A finished run's report (artifact `artifact_key`, listed as `report` under the run's Artifacts) -> its
    capacity chart (an SVG in a data: URL), as the UI shows it: the <img>'s decoded size, its box, its alt text."""
    query = {"artifacts": {"key": {"any_": [artifact_key]}}}
    (artifact,) = httpx.post(f"{api_url}/artifacts/filter", json=query, timeout=10).json()
    page.goto(f"{ui_url}/v2/runs/flow-run/{artifact['flow_run_id']}")
    page.get_by_role("tab", name="Artifacts").click(timeout=WAIT_MS)
    page.get_by_text(report).first.click(timeout=WAIT_MS)
    page.get_by_role("link", name=artifact["id"][:8]).first.click(timeout=WAIT_MS)  # the report's one version
    page.get_by_role("heading", name="Capacity in time").first.wait_for(timeout=WAIT_MS)
    chart = page.locator('img[src^="data:image/svg+xml;base64,"]').first
    chart.wait_for(state="visible", timeout=WAIT_MS)
    chart.evaluate("img => img.scrollIntoView({block: 'center'})")  # the whole chart in the screenshot
    decoded = chart.evaluate("img => ({complete: img.complete, width: img.naturalWidth, height: img.naturalHeight})")
    box = chart.bounding_box()
    page.screenshot(path=str(shot))
    return {**decoded, "box": box, "alt": chart.get_attribute("alt")}


class Requests:
    """Requests to the session service through its CLB, from a background thread, at a rising rate, until stopped."""

    def __init__(self, url: str) -> None:
        self.url, self.sent = url, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._send, name="requests", daemon=True)

    def _send(self) -> None:
        from tasks.health import AUTH_PROBE

        started = time.monotonic()
        with httpx.Client(timeout=5) as client:
            while not self._stop.wait(1 / min(START_RATE + RISE * (time.monotonic() - started) / 60, TOP_RATE)):
                try:
                    client.post(self.url, json=AUTH_PROBE)
                    self.sent += 1
                except httpx.HTTPError:
                    pass  # a server leaving the CLB: the next request goes to another

    def __enter__(self) -> Requests:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def set_capacity_report(workdir: Path) -> str:
    """The guide's session tier scaled out, handed to Auto Scaling and set +2 under load: set-capacity's report key."""
    from devstack.demo import autoscaling_tiers, seed_guide, seed_parameters
    from sandbox.core.emulated_cloud import SandboxConfig
    from sandbox.server import EmbeddedSandbox

    with EmbeddedSandbox(SandboxConfig(port=0, state_dir=workdir / "sandbox")) as sandbox:
        guide = seed_guide(sandbox, workdir)
        from flows.configure_autoscaling import configure_autoscaling
        from flows.parameters import AutoScalingClusterParameters, CapacityParameters
        from flows.scale_out import scale_out_session_tier
        from flows.set_capacity import set_capacity
        from tasks.health import auth_url

        typer.echo("scale-out-session-tier: 2 more session servers ...")
        scaled = scale_out_session_tier(seed_parameters(guide, 2).session)
        session = autoscaling_tiers(guide, 2)["session"]
        typer.echo("configure-autoscaling: the session tier ...")
        configure_autoscaling(AutoScalingClusterParameters(tiers=["session"], session=session))
        sandbox.admin("POST", "clock", {"profile": "realistic", "time_scale": LAUNCH_SCALE})
        url = auth_url(scaled.vip or "", guide["ports"]["map"]["80"])
        typer.echo(f"set-capacity +2 on the realistic clock, {START_RATE:g} requests/s rising to {url} ...")
        with Requests(url) as load:
            outcome = set_capacity(CapacityParameters(tier="session", capacity="+2", session=session))
        typer.echo(f"  set-capacity: {len(outcome.members)} servers in the group; {load.sent} requests sent")
        return f"set-capacity-{outcome.run_key}"  # flows/shared/report.py: the run's report, with its chart


def main(
    screenshot: Annotated[Path, typer.Argument(help="the PNG to write, e.g. docs/chart-in-ui.png")],
    workdir: Annotated[Path | None, typer.Option(help="where the sandbox and Prefect keep state")] = None,
) -> None:
    import tempfile

    from devstack.demo import prepare_environment, start_prefect
    from devstack.prefect_server import PrefectServer

    workdir = workdir or Path(tempfile.mkdtemp(prefix="tcscale-chart-"))
    server = PrefectServer(workdir / "prefect-server")
    prepare_environment(workdir, server, ui=True)
    try:
        start_prefect(server)
        key = set_capacity_report(workdir)
        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport=WINDOW)
                page.set_default_timeout(WAIT_MS)
                chart = open_chart(page, server.ui_url, server.api_url, key, "set-capacity report (", screenshot)
            finally:
                browser.close()
    finally:
        server.stop()
    if not chart["complete"] or chart["width"] == 0:
        raise SystemExit(f"the UI did not draw the chart: {chart}")
    typer.echo(f"{screenshot}: {screenshot.stat().st_size // 1024} KB; the chart: {chart['alt'][:200]}")


if __name__ == "__main__":
    typer.run(main)
