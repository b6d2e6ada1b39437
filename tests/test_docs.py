"""The documentation holds together: links resolve, the README stays short and draws the current layout.

Reads files only (no sandbox, no Prefect): a fast unit test.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from deployments.serve import load_flow

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
README_MAX_LINES = 200

# [text](target) and ![alt](target); the target ends at the first blank or closing parenthesis
# (an optional "title" after a blank is ignored). Reference-style definitions: `[name]: target`.
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^\s)>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s+<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.IGNORECASE)  # http:, https:, mailto:, ...
FENCE = re.compile(r"^\s*(```|~~~)")


def documents() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "sandbox" / "README.md", ROOT / "bench" / "README.md"]


def without_code(text: str) -> str:
    """The text with fenced code blocks and inline code spans blanked (links in code are not links)."""
    kept, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            kept.append("")
            continue
        kept.append("" if fenced else re.sub(r"`[^`]*`", "``", line))
    return "\n".join(kept)


def links(text: str) -> list[str]:
    prose = without_code(text)
    return INLINE_LINK.findall(prose) + REFERENCE_LINK.findall(prose)


def relative_targets(text: str) -> list[str]:
    """Every link target that names a file of the repository, without its #anchor."""
    targets = []
    for target in links(text):
        if EXTERNAL.match(target):
            continue
        path = target.split("#", 1)[0].split("?", 1)[0]
        if path:  # "#anchor" alone points into the same document
            targets.append(path)
    return targets


def layout_block(text: str) -> list[str]:
    """The lines of the README's layout tree: the fenced block whose lines start with `flows/`, `tasks/`, ..."""
    blocks: list[list[str]] = []
    current: list[str] | None = None
    for line in text.splitlines():
        if FENCE.match(line):
            if current is None:
                current = []
            else:
                blocks.append(current)
                current = None
        elif current is not None:
            current.append(line)
    for block in blocks:
        if any(line.startswith("flows/") for line in block) and any(line.startswith("tasks/") for line in block):
            return block
    return []


def top_level_packages() -> set[str]:
    return {p.parent.name for p in ROOT.glob("*/__init__.py")} | {"docs"}


# --- the parsers themselves (so that a broken regex cannot make the checks below pass vacuously) ----------


def test_link_parser_finds_links_and_images_and_skips_code_and_external():
    text = (
        "See [the guide](docs/operating.md#the-cluster-declaration) and ![shot](docs/report-in-ui.png).\n"
        "A [site](https://docs.prefect.io), [mail](mailto:ops@example.com), an [anchor](#tests).\n"
        "[ref]: sandbox/README.md\n"
        "Inline `[not](a-link.md)` code.\n"
        "```\n[also not](in-a-fence.md)\n```\n"
        '[nested [brackets]](bench/README.md "a title")\n'
    )
    assert relative_targets(text) == [
        "docs/operating.md",
        "docs/report-in-ui.png",
        "bench/README.md",
        "sandbox/README.md",
    ]


def test_layout_parser_finds_the_tree():
    text = "intro\n```sh\nmake demo\n```\n```\nflows/   the flows\n  shared/\ntasks/   the tasks\n```\n"
    assert layout_block(text) == ["flows/   the flows", "  shared/", "tasks/   the tasks"]
    assert layout_block("```\nmake demo\n```\n") == []


# --- the documents ---------------------------------------------------------------------------------------


def test_the_documents_exist():
    missing = [str(p.relative_to(ROOT)) for p in documents() if not p.is_file()]
    assert not missing, f"missing documents: {missing}"
    assert len(documents()) >= 9  # README, sandbox/ and bench/ READMEs, and the docs/ pages


@pytest.mark.parametrize("document", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(document: Path):
    text = document.read_text(encoding="utf-8")
    assert links(text), f"{document.relative_to(ROOT)} has no link at all"
    broken = sorted({t for t in relative_targets(text) if not (document.parent / t).resolve().exists()})
    assert not broken, f"{document.relative_to(ROOT)}: links to missing files: {broken}"


def test_the_documents_link_each_other():
    targets = [t for document in documents() for t in relative_targets(document.read_text(encoding="utf-8"))]
    assert len(targets) >= 40, f"only {len(targets)} relative links in all the documents"


def test_the_readme_links_every_doc_and_the_screenshot():
    targets = {(ROOT / t).resolve() for t in relative_targets(README.read_text(encoding="utf-8"))}
    unlinked = [str(p.relative_to(ROOT)) for p in documents()[1:] if p.resolve() not in targets]
    assert not unlinked, f"README.md does not link {unlinked}"
    assert (ROOT / "docs" / "report-in-ui.png").resolve() in targets


def test_the_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert 50 < len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"


def test_the_readme_layout_names_every_top_level_package():
    block = layout_block(README.read_text(encoding="utf-8"))
    assert block, "README.md has no layout tree (a fenced block whose lines start with flows/, tasks/, ...)"
    drawn = {m.group(1) for line in block if (m := re.match(r"^([A-Za-z_][\w.-]*)/", line))}
    packages = top_level_packages()
    assert {"flows", "tasks", "sandbox", "docs"} <= packages
    missing = sorted(packages - drawn)
    assert not missing, f"README.md's layout tree does not show {missing}"
    gone = sorted(d for d in drawn if not (ROOT / d).is_dir())
    assert not gone, f"README.md's layout tree shows folders that do not exist: {gone}"


def test_the_readme_names_every_flow_and_deployment():
    readme = README.read_text(encoding="utf-8")
    flows = set(re.findall(r"@flow\(\s*name=\"([a-z-]+)\"", "\n".join(p.read_text() for p in ROOT.glob("flows/*.py"))))
    assert len(flows) == 8, f"expected the 8 flows in flows/*.py, found {sorted(flows)}"
    project = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    deployments = set()
    for deployment in project["deployments"]:  # each runs its run form's flow (flows/entrypoints.py), named as these
        flow = load_flow(deployment["entrypoint"])
        assert flow.name in flows, deployment["entrypoint"]
        deployments.add(f"{flow.name}/{deployment['name']}")
    assert len(deployments) == 10, f"expected the ten deployments of prefect.yaml, found {sorted(deployments)}"
    missing = sorted(name for name in flows | deployments if f"`{name}`" not in readme)
    assert not missing, f"README.md does not name {missing}"
