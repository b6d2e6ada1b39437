"""Regenerate the trimmed API specs the sandbox validates requests against.

    uv run python -m sandbox.specs.generate [--wheel tccli-X.whl]

Source: Tencent's own tccli, which ships every service's `api.json`. We download its wheel
(no dependencies), keep only the actions the sandbox registers handlers for, the objects they
reach, and of each member only what validation and response checks need.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

TCCLI_VERSION = "3.1.189.1"
SPEC_DIR = Path(__file__).resolve().parent
# signing service name -> tccli's folder name
TCCLI_FOLDER = {"cvm": "cvm", "clb": "clb", "vpc": "vpc", "as": "autoscaling", "monitor": "monitor"}
KEEP = ("name", "type", "member", "required", "output_required", "value_allowed_null")


def fetch_wheel(into: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", f"tccli=={TCCLI_VERSION}", "-d", str(into)],
        check=True,
    )
    return next(into.glob("tccli-*.whl"))


def reachable(objects: dict[str, Any], roots: list[str]) -> list[str]:
    seen: list[str] = []
    stack = list(roots)
    while stack:
        name = stack.pop()
        if name in seen or name not in objects:
            continue
        seen.append(name)
        stack.extend(m["member"] for m in objects[name]["members"] if m.get("member") in objects)
    return sorted(seen)


def trim(api: dict[str, Any], service: str, version: str, actions: list[str]) -> dict[str, Any]:
    objects = api["objects"]
    declared = {a: {"input": api["actions"][a]["input"], "output": api["actions"][a]["output"]} for a in actions}
    roots = [name for d in declared.values() for name in d.values()]
    return {
        "service": service,
        "version": version,
        "source": f"tccli {TCCLI_VERSION}",
        "actions": declared,
        "objects": {
            name: [{k: m[k] for k in KEEP if k in m} for m in objects[name]["members"]]
            for name in reachable(objects, roots)
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheel", type=Path, help="a tccli wheel already downloaded")
    args = parser.parse_args()

    import sandbox.services  # noqa: F401
    from sandbox.core.registry import ACTIONS

    wanted: dict[tuple[str, str], list[str]] = {}
    for service, version, action in ACTIONS:
        wanted.setdefault((service, version), []).append(action)

    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or fetch_wheel(Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            for (service, version), actions in sorted(wanted.items()):
                folder = f"tccli/services/{TCCLI_FOLDER[service]}/v{version.replace('-', '')}"
                api = json.loads(zf.read(f"{folder}/api.json"))
                unknown = [a for a in actions if a not in api["actions"]]
                if unknown:
                    raise SystemExit(f"{service} {version}: not in tccli's spec: {unknown}")
                spec = trim(api, service, version, sorted(actions))
                out = SPEC_DIR / f"{service}-{version}.json"
                out.write_text(json.dumps(spec, ensure_ascii=False, indent=1, sort_keys=True) + "\n")
                print(f"{out.name}: {len(actions)} actions, {len(spec['objects'])} objects")


if __name__ == "__main__":
    main()
