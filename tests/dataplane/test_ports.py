"""The sandbox's port map: real ports everywhere in the cloud model, another socket port only where needed."""

from sandbox.dataplane.ports import PortMap


def test_real_ports_where_bindable_else_mapped() -> None:
    root = PortMap(start=0)
    assert [root.listen(p) for p in (80, 5757, 8080)] == [80, 5757, 8080]
    user = PortMap(start=1024)  # not root: below 1024 cannot be bound
    assert [user.listen(p) for p in (80, 443, 5757, 8080)] == [10080, 10443, 5757, 8080]
    assert user.table([5757, 80, 80]) == {"80": 10080, "5757": 5757}


def test_a_configured_app_port_serves_80_and_bases_the_low_ports_even_as_root() -> None:
    configured = PortMap(http_port=8301, start=0)  # concurrent sandboxes (tests) stay apart
    assert [configured.listen(p) for p in (80, 443, 5757, 8080)] == [8301, 8664, 5757, 8080]
