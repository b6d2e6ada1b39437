"""Listener and layer-4 target rules of the CLB backend: CreateListener, DeleteListener, Register/DeregisterTargets."""

from typing import TYPE_CHECKING, Any

from sandbox.clb.models import ClbState, HealthCheck, Listener, LoadBalancer, Target, Task
from sandbox.core.errors import ApiError
from sandbox.core.ids import new_id

if TYPE_CHECKING:
    from sandbox.core.emulated_cloud import Cloud


class ListenerRules:
    """Mixed into ClbBackend (which provides `state`, `cloud`, the lookups and the task bookkeeping)."""

    state: ClbState
    cloud: "Cloud"

    if TYPE_CHECKING:

        def load_balancer(self, region: str, lb_id: str) -> LoadBalancer: ...
        def listener(self, lb: LoadBalancer, listener_id: str) -> Listener: ...
        def check_writable(self, lb: LoadBalancer) -> None: ...
        def begin_write(self, action: str, task_id: str, lb: LoadBalancer, failure: str | None) -> Task: ...
        def changed(self, lb: LoadBalancer) -> None: ...

    def create_listeners(
        self,
        region: str,
        task_id: str,
        failure: str | None,
        lb_id: str,
        protocol: str,
        ports: list[int],
        names: list[str],
        health_check: HealthCheck | None,
        scheduler: str,
    ) -> list[Listener]:
        lb = self.load_balancer(region, lb_id)
        self.check_writable(lb)
        used = {(TRANSPORT.get(li.protocol, "tcp"), li.port) for li in lb.listeners.values()}
        for port in ports:
            if (TRANSPORT.get(protocol, "tcp"), port) in used:
                raise ApiError(
                    "InvalidParameter.PortCheckFailed",
                    f"The port {port} of LoadBalancer `{lb_id}` is already used by another listener.",
                )
        self.begin_write("CreateListener", task_id, lb, failure)
        created = []
        for port, name in zip(ports, names, strict=True):
            listener = Listener(
                listener_id=new_id("lbl"),
                listener_name=name,
                protocol=protocol,
                port=port,
                health_check=health_check or default_health_check(protocol),
                scheduler=scheduler,
                created_time=self.cloud.clock.plain(),
            )
            lb.listeners[listener.listener_id] = listener
            created.append(listener)
        self.changed(lb)
        return created

    def delete_listener(self, region: str, task_id: str, failure: str | None, lb_id: str, listener_id: str) -> None:
        lb = self.load_balancer(region, lb_id)
        self.listener(lb, listener_id)
        self.begin_write("DeleteListener", task_id, lb, failure)
        del lb.listeners[listener_id]
        self.changed(lb)

    # ---- targets (layer 4) --------------------------------------------------------------------------
    def _layer4_listener(self, lb: LoadBalancer, listener_id: str, location_id: str | None) -> Listener:
        listener = self.listener(lb, listener_id)
        if listener.protocol not in TRANSPORT:
            # Layer-7 targets hang on forwarding rules, which the sandbox does not emulate.
            raise ApiError(
                "InvalidParameter.LocationNotFound",
                f"No forwarding rule `{location_id or ''}` found on {listener.protocol} listener `{listener_id}`.",
            )
        return listener

    def register_targets(
        self,
        region: str,
        task_id: str,
        failure: str | None,
        lb_id: str,
        listener_id: str,
        targets: list[Target],
        location_id: str | None = None,
    ) -> None:
        lb = self.load_balancer(region, lb_id)
        listener = self._layer4_listener(lb, listener_id, location_id)
        self.check_writable(lb)
        bound = {(t.instance_id, t.port) for t in listener.targets}
        for target in targets:
            instance = self._bindable_instance(lb, target.instance_id)
            if (target.instance_id, target.port) in bound:
                raise ApiError(
                    "InvalidParameter",
                    f"The target {target.instance_id}:{target.port} is already bound to listener `{listener_id}`.",
                )
            target.private_ip = instance.private_ip
        self.begin_write("RegisterTargets", task_id, lb, failure)
        now = self.cloud.clock.plain()
        for target in targets:
            target.registered_time, target.healthy = now, None
            listener.targets.append(target)
        self.changed(lb)

    def deregister_targets(
        self,
        region: str,
        task_id: str,
        failure: str | None,
        lb_id: str,
        listener_id: str,
        targets: list[tuple[str, int]],
        location_id: str | None = None,
    ) -> None:
        lb = self.load_balancer(region, lb_id)
        listener = self._layer4_listener(lb, listener_id, location_id)
        self.check_writable(lb)
        bound = {(t.instance_id, t.port) for t in listener.targets}
        for instance_id, port in targets:
            if (instance_id, port) not in bound:
                raise ApiError(
                    "InvalidParameter",
                    f"The target {instance_id}:{port} is not bound to listener `{listener_id}`.",
                )
        self.begin_write("DeregisterTargets", task_id, lb, failure)
        gone = set(targets)
        listener.targets = [t for t in listener.targets if (t.instance_id, t.port) not in gone]
        self.changed(lb)

    def _bindable_instance(self, lb: LoadBalancer, instance_id: str) -> Any:
        """The CVM to bind: same region and VPC as the LB, RUNNING, neither isolated nor expired."""
        cvm: Any = self.cloud.backends.get("cvm")
        instances = getattr(getattr(cvm, "state", None), "instances", {})
        instance = instances.get(instance_id)
        if instance is None or instance.region != lb.region:
            raise ApiError("InvalidParameter", f"The instance `{instance_id}` does not exist in {lb.region}.")
        if instance.vpc_id != lb.vpc_id:
            raise ApiError(
                "InvalidParameter",
                f"The instance `{instance_id}` is in VPC `{instance.vpc_id}`, not in the LoadBalancer's "
                f"VPC `{lb.vpc_id}`.",
            )
        if instance.restrict_state != "NORMAL":
            raise ApiError(
                "FailedOperation",
                f"The instance `{instance_id}` is {instance.restrict_state.lower()} and cannot be bound.",
            )
        if instance.state != "RUNNING":
            raise ApiError(
                "FailedOperation", f"The instance `{instance_id}` is {instance.state}, not RUNNING: it cannot be bound."
            )
        return instance


TRANSPORT = {"TCP": "tcp", "UDP": "udp"}  # the layer-4 protocols; layer 7 (HTTP) rides on TCP ports too


def default_health_check(protocol: str) -> HealthCheck:
    return HealthCheck(check_type="PING" if protocol == "UDP" else "TCP") if protocol in TRANSPORT else HealthCheck()
