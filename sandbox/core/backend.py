"""Base of every service backend: a pydantic state model, persistence, and due transitions."""

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel

if TYPE_CHECKING:
    from sandbox.core.emulated_cloud import Cloud

BACKENDS: dict[str, type["Backend"]] = {}


def backend(cls: type["Backend"]) -> type["Backend"]:
    BACKENDS[cls.service] = cls
    return cls


class Backend:
    """State and rules of one service; knows nothing of HTTP."""

    service: ClassVar[str]
    state_model: ClassVar[type[BaseModel]]

    def __init__(self, cloud: "Cloud") -> None:
        self.cloud = cloud
        self.state = self.state_model()

    def advance(self, now: float) -> float | None:
        """Apply every transition due by `now`; return when the next one is due (None: none pending)."""
        return None

    def dump(self) -> dict[str, Any]:
        return self.state.model_dump(mode="json")

    def load(self, data: dict[str, Any]) -> None:
        self.state = self.state_model.model_validate(data)
