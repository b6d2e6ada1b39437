"""The `with` shape of the rehearsal's throwaway services (PostgreSQL, Redis)."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Throwaway:
    """A local service for the length of a `with`: started on entry, stopped on exit, and stopped too when its start
    fails, so no half-started process or folder is left behind."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
