"""One FastAPI dependency factory for both services: ``app_state("store")`` returns what the app put on
``app.state.store`` at start, so each service's dependencies module declares its typed aliases in one line
each (``Store = Annotated[JobStore, Depends(app_state("store"))]``) and no route reads ``app.state``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import HTTPConnection


def app_state(name: str) -> Callable[[HTTPConnection], Any]:
    """A dependency returning ``app.state.<name>``; ``HTTPConnection`` serves HTTP and WebSocket routes."""

    def dependency(conn: HTTPConnection) -> Any:
        return getattr(conn.app.state, name)

    dependency.__name__ = dependency.__qualname__ = f"app_state_{name}"
    return dependency
