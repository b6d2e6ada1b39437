"""Measure each deployment's Custom run form in the Prefect UI, in Chromium: its fields, how many of them the first
screen shows, its height, and how often it says "Property is type None".

    uv run python -m devstack.run_forms http://127.0.0.1:4200 [--screenshots docs/] [--json out.json]

against a running stack (`tcscale up` prints the UI's address). It opens, for every deployment, the page the UI's
Run -> Custom run opens (`/deployments/deployment/<id>/run`) in headless Debian Chromium (Playwright drives
/usr/bin/chromium, never a downloaded browser), at a 1600 x 1100 window. A field is one input the form draws (a
number, a text box, a toggle, a list, a JSON editor, a None choice); an object is the box around its fields, not a
field. The first screen is the window before any scrolling. tests/devstack/test_browser.py runs the same
measurement on the test stack.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from pydantic import BaseModel

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1600, "height": 1100}
WAIT_MS = 60_000  # a busy 2-core machine renders the UI slowly
NONE_TEXT = 'Property is type "None"'

# In the page: the run form's inputs (the UI's schema form marks each with `schema-form-property-input`, a JSON editor
# with `schema-form-property-kind-json`; an object's card is an input too, and a list's items are inputs inside the
# list's): the leaves, where they are, the form's height.
MEASURE_JS = """() => {
  const form = document.querySelector('form.flow-run-create-form-v2');
  const inputs = [...form.querySelectorAll('.schema-form-property-input, .schema-form-property-kind-json')];
  const isBox = (e) => e.classList.contains('schema-form-property-object');
  const fields = inputs.filter((e) => {
    if (isBox(e)) return false;
    for (let up = e.parentElement; up && up !== form; up = up.parentElement) {
      if (up.classList.contains('schema-form-property-input') && !isBox(up)) return false;
    }
    return true;
  });
  const label = (e) => {
    const property = e.closest('.schema-form-property');
    const text = property && property.querySelector('.schema-form-property__label');
    return text ? text.innerText.trim() : '';
  };
  const tops = fields.map((e) => e.getBoundingClientRect().top);
  return {
    height: Math.round(form.getBoundingClientRect().height),
    fields: fields.map(label),
    first_screen: fields.filter((_, i) => tops[i] < window.innerHeight).map(label),
    none_properties: [...form.querySelectorAll('.schema-form-property-null')].length,
  };
}"""


class FormMeasure(BaseModel):
    deployment: str  # flow/deployment
    fields: list[str]  # each field's label, in the form's order
    first_screen: list[str]  # the fields whose top is inside the window before scrolling
    height: int  # the form's height, px
    none_properties: int  # fields that say 'Property is type "None"'
    text: str  # the form's text as shown

    def row(self) -> str:
        return (
            f"| {self.deployment} | {len(self.fields)} | {len(self.first_screen)} | {self.height:,} | "
            f"{self.none_properties} |"
        )


TABLE_HEAD = (
    "| deployment | fields | on the first screen | height (px) | 'Property is type None' |\n|---|---|---|---|---|"
)


def deployments(api_url: str) -> list[tuple[str, str]]:
    """(flow/deployment, id) of every deployment, sorted by name."""
    flows = {f["id"]: f["name"] for f in httpx.post(f"{api_url}/flows/filter", json={}, timeout=30).json()}
    found = httpx.post(f"{api_url}/deployments/filter", json={}, timeout=30).json()
    return sorted((f"{flows[d['flow_id']]}/{d['name']}", d["id"]) for d in found)


def measure_form(page: Any, ui_url: str, deployment_id: str, name: str, screenshot: Path | None = None) -> FormMeasure:
    """Open the deployment's Custom run form and measure it (the page is left on the form)."""
    page.goto(f"{ui_url}/deployments/deployment/{deployment_id}/run")
    page.locator("form.flow-run-create-form-v2 .schema-form-property-input").first.wait_for(timeout=WAIT_MS)
    page.get_by_role("button", name="Submit").first.wait_for(timeout=WAIT_MS)
    measured, previous = page.evaluate(MEASURE_JS), None
    for _ in range(40):  # the form fills in its values after it appears: measure once two looks agree
        if measured == previous:
            break
        page.wait_for_timeout(250)
        previous, measured = measured, page.evaluate(MEASURE_JS)
    if screenshot is not None:
        page.screenshot(path=str(screenshot))
    text = page.locator("form.flow-run-create-form-v2").inner_text()
    return FormMeasure(deployment=name, text=text, **measured)


def measure_all(ui_url: str, api_url: str, screenshots: Path | None = None) -> list[FormMeasure]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(WAIT_MS)
            measures = []
            for name, deployment_id in deployments(api_url):
                shot = screenshots / f"run-form-{name.split('/')[1]}.png" if screenshots else None
                measures.append(measure_form(page, ui_url, deployment_id, name, shot))
            return measures
        finally:
            browser.close()


def main(
    ui_url: Annotated[str, typer.Argument(help="the Prefect UI, e.g. http://127.0.0.1:4200")],
    screenshots: Annotated[Path | None, typer.Option(help="folder for each form's screenshot")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the measures here as JSON")] = None,
) -> None:
    ui_url = ui_url.rstrip("/")
    measures = measure_all(ui_url, f"{ui_url}/api", screenshots)
    typer.echo(TABLE_HEAD)
    for measure in measures:
        typer.echo(measure.row())
    if json_out is not None:
        json_out.write_text(json.dumps([m.model_dump(exclude={"text"}) for m in measures], indent=2) + "\n")


if __name__ == "__main__":
    typer.run(main)
