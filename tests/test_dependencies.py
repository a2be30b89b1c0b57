"""Routes take typed dependencies (gateway/dependencies.py, preprocessor/dependencies.py) instead of
reaching into ``app.state``, and no ``async def`` route calls the blocking job store or evidence files on
the event loop."""

from __future__ import annotations

import ast
import inspect

from deepfake.settings import REPO_ROOT

ROUTERS = sorted((REPO_ROOT / "gateway" / "routers").glob("*.py")) + sorted(
    (REPO_ROOT / "preprocessor" / "routers").glob("*.py")
)
# Blocking calls (SQLite/PostgreSQL, files) that an async route must not make on the event loop.
BLOCKING_OBJECTS = {"store", "evidence"}


def test_no_router_reads_app_state():
    offenders = [
        f"{path.relative_to(REPO_ROOT)}:{node.lineno}"
        for path in ROUTERS
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute)
        and node.attr == "state"
        and ast.unparse(node.value).endswith(".app")
    ]
    assert not offenders, f"take a dependency (gateway/dependencies.py) instead: {offenders}"


def test_async_routes_make_no_direct_store_or_evidence_calls():
    offenders = []
    for path in ROUTERS:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.AsyncFunctionDef):
                continue
            for call in ast.walk(node):
                if (
                    isinstance(call, ast.Call)
                    and isinstance(call.func, ast.Attribute)
                    and isinstance(call.func.value, ast.Name)
                    and call.func.value.id in BLOCKING_OBJECTS
                ):
                    offenders.append(f"{path.relative_to(REPO_ROOT)}:{call.lineno} {ast.unparse(call.func)}")
    assert not offenders, f"run these on a thread (run_in_threadpool) or make the route sync: {offenders}"


def test_the_job_routes_that_touch_the_store_are_sync_or_hand_it_to_a_thread():
    from gateway.routers import jobs

    assert inspect.iscoroutinefunction(jobs.create_job)  # streams the upload; its store write is on a thread
    for route in (
        jobs.list_jobs,
        jobs.get_job,
        jobs.get_job_result,
        jobs.get_job_evidence,
        jobs.get_job_report,
    ):
        assert not inspect.iscoroutinefunction(route), route.__name__  # FastAPI runs it on its thread pool
    assert not inspect.iscoroutinefunction(jobs.delete_job)
