"""deployments/cam-policy.json allows exactly the Tencent Cloud API actions the product calls: no more, no less.

The actions are read from the product's source (flows/, tasks/, deployments/, chatops/) with `ast`: every `call(client,
"Action", ...)` / `call_json(...)`, following wrappers that pass the action or the client on (`_write(region, id,
"CreateListener", ...)`), and any direct call of an SDK client method. The service is the client's
(`clients_for(region).clb`, a local `cvm = clients_for(region).cvm`, `make_client("vpc")`). A call whose action or
service cannot be read this way fails the test: make it readable rather than letting the policy drift.
"""

import ast
import importlib
import inspect
import json
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("flows", "tasks", "deployments", "chatops")
POLICY = ROOT / "deployments" / "cam-policy.json"
SDK_CALLS = {"call", "call_json"}  # tasks.cloud: call(client, action, request, limiter=None)
CLIENT_ATTRIBUTES = {
    "cvm": "cvm",
    "clb": "clb",
    "vpc": "vpc",
    "autoscaling": "as",
    "monitor": "monitor",
}  # tasks.cloud.Clients
SDK_CLIENTS = {
    "cvm": ("tencentcloud.cvm.v20170312.cvm_client", "CvmClient"),
    "clb": ("tencentcloud.clb.v20180317.clb_client", "ClbClient"),
    "vpc": ("tencentcloud.vpc.v20170312.vpc_client", "VpcClient"),
    "as": ("tencentcloud.autoscaling.v20180419.autoscaling_client", "AutoscalingClient"),
    "monitor": ("tencentcloud.monitor.v20180724.monitor_client", "MonitorClient"),
}
Function = ast.FunctionDef | ast.AsyncFunctionDef | None


@dataclass(frozen=True)
class Site:
    where: str
    call: ast.Call
    function: Function


def sdk_methods() -> set[str]:
    """Every API method of the SDK clients the product uses (DescribeInstances, ...)."""
    names: set[str] = set()
    for module, cls in SDK_CLIENTS.values():
        client = getattr(importlib.import_module(module), cls)
        names |= {n for n, _ in inspect.getmembers(client, inspect.isfunction) if n[:1].isupper()}
    return names


class Source:
    """Every call in the product's modules, with its enclosing function (lambdas belong to theirs)."""

    def __init__(self, root: Path = ROOT) -> None:
        self.sites: list[Site] = []
        self.outer: dict[ast.AST, Function] = {}  # function -> the function it is defined in (closures)
        for path in sorted(p for folder in PRODUCT for p in (root / folder).rglob("*.py")):
            self._scan(ast.parse(path.read_text(), str(path)), str(path.relative_to(root)), None)

    def _scan(self, node: ast.AST, file: str, function: Function) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                self.outer[child] = function
                self._scan(child, file, child)
                continue
            if isinstance(child, ast.Call):
                self.sites.append(Site(f"{file}:{child.lineno}", child, function))
            self._scan(child, file, function)

    def callers(self, function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[Site]:
        return [s for s in self.sites if _callee(s.call) == function.name]


def _callee(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _argument(call: ast.Call, function: ast.FunctionDef | ast.AsyncFunctionDef, name: str) -> ast.expr | None:
    """The expression a call site passes for parameter `name` (positional or keyword)."""
    positional = [a.arg for a in (*function.args.posonlyargs, *function.args.args)]
    if name in positional and positional.index(name) < len(call.args):
        return call.args[positional.index(name)]
    return next((k.value for k in call.keywords if k.arg == name), None)


def _params(function: Function) -> set[str]:
    return {a.arg for a in (*function.args.posonlyargs, *function.args.args)} if function else set()


def _scope(source: Source, name: str, function: Function) -> tuple[ast.expr | None, Function]:
    """Where `name` comes from, innermost function first (closures read their outer function's names):
    (the expression assigned to it, None) or (None, the function it is a parameter of) or (None, None)."""
    while function is not None:
        if name in _params(function):
            return None, function
        bound = _local_value(name, function)
        if bound is not None:
            return bound, None
        function = source.outer.get(function)
    return None, None


def _local_value(name: str, function: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.expr | None:
    """`x = expr` or `x, y = a, b` inside the function: the expression bound to `name`."""
    for node in ast.walk(function):
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            if isinstance(target, ast.Name) and target.id == name:
                return node.value
            if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                for element, value in zip(target.elts, node.value.elts, strict=False):
                    if isinstance(element, ast.Name) and element.id == name:
                        return value
    return None


def _constant(expr: ast.expr) -> str | None:
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return expr.value
    if isinstance(expr, ast.Attribute) and expr.attr in CLIENT_ATTRIBUTES:
        return CLIENT_ATTRIBUTES[expr.attr]
    if isinstance(expr, ast.Call) and _callee(expr) == "make_client" and expr.args:
        return _constant(expr.args[0])
    return None


def resolve(
    source: Source, client: ast.expr, action: ast.expr, function: Function, where: str, depth: int = 0
) -> set[tuple[str, str]]:
    """{(service, action)} for one call, following locals and, for parameters, every caller of the function."""
    assert depth < 10, f"{where}: wrappers nested too deep to follow"
    values: list[str | None] = []
    exprs = [client, action]
    declared_in: set[Function] = set()
    for index, expr in enumerate(exprs):
        while isinstance(expr, ast.Name):
            bound, parameter_of = _scope(source, expr.id, function)
            if bound is None:
                declared_in.add(parameter_of)
                break
            expr = exprs[index] = bound
        values.append(_constant(expr))
    if None not in values:
        return {(values[0], values[1])}
    for value, expr, what in zip(values, exprs, ("service", "action"), strict=True):
        assert value is not None or (isinstance(expr, ast.Name) and None not in declared_in), (
            f"{where}: cannot read the {what} of this SDK call ({ast.unparse(expr)}): "
            "pass a literal action and a `clients_for(...).<service>` client"
        )
    assert len(declared_in) == 1, f"{where}: the client and the action come from different functions"
    function = declared_in.pop()
    assert function is not None
    found = set()
    callers = source.callers(function)
    assert callers, f"{where}: {function.name} passes its action on, but nothing in the product calls it"
    for site in callers:
        passed = [_argument(site.call, function, e.id) if isinstance(e, ast.Name) else e for e in exprs]
        assert None not in passed, f"{site.where}: {function.name} called without a client or an action"
        found |= resolve(source, passed[0], passed[1], site.function, site.where, depth + 1)
    return found


def called_actions(root: Path = ROOT) -> set[str]:
    source, methods = Source(root), sdk_methods()
    actions: set[tuple[str, str]] = set()
    for site in source.sites:
        name = _callee(site.call)
        if name in SDK_CALLS and len(site.call.args) >= 2:
            if site.function is not None and site.function.name in SDK_CALLS | {"_request_model"}:
                continue  # tasks.cloud's own plumbing: its callers are scanned instead
            actions |= resolve(source, site.call.args[0], site.call.args[1], site.function, site.where)
        elif name in methods and isinstance(site.call.func, ast.Attribute):  # a direct SDK client method call
            action = ast.Constant(name)
            actions |= resolve(source, site.call.func.value, action, site.function, site.where)
    return {f"{service}:{action}" for service, action in actions}


def test_the_product_calls_nothing_the_scan_cannot_see() -> None:
    for path in (p for folder in PRODUCT for p in (ROOT / folder).rglob("*.py")):
        text = path.read_text()
        assert "CommonClient" not in text, f"{path}: CommonClient calls are not scanned for the CAM policy"


def test_the_cam_policy_allows_exactly_the_actions_the_product_calls() -> None:
    policy = json.loads(POLICY.read_text())
    assert policy["version"] == "2.0"
    allowed: list[str] = []
    for statement in policy["statement"]:
        assert statement["effect"] == "allow" and statement["resource"] == ["*"]
        allowed += statement["action"]
    assert allowed == sorted(set(allowed)), "list each action once, sorted"
    assert not [a for a in allowed if "*" in a], "no wildcards: least privilege"
    called = called_actions()
    assert "cvm:RunInstances" in called and "clb:CreateListener" in called  # the scan sees calls and wrappers
    missing, unused = sorted(called - set(allowed)), sorted(set(allowed) - called)
    assert not missing and not unused, f"add to {POLICY.name}: {missing}; remove (never called): {unused}"


def test_the_scan_follows_wrappers_closures_and_direct_sdk_calls(tmp_path: Path) -> None:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "sample.py").write_text(
        """
def _write(region, balancer, action, request):
    return call_json(clients_for(region).clb, action, {"LoadBalancerId": balancer, **request})

def listen(region):
    _write(region, "lb-1", "CreateListener", {})
    _write(region, "lb-1", action="ModifyListener", request={})

def wait(region):
    cvm = clients_for(region).cvm
    poll(lambda: call(cvm, "DescribeInstancesStatus", {}))

def direct(region):
    vpc_client, _ = clients_for(region).vpc, 0
    return vpc_client.DescribeVpcs(request)
"""
    )
    assert called_actions(tmp_path) == {
        "clb:CreateListener",
        "clb:ModifyListener",
        "cvm:DescribeInstancesStatus",
        "vpc:DescribeVpcs",
    }
