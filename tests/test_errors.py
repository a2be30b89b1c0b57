"""One error root and one code -> status table (deepfake.contracts.errors): every code the source raises is
in the table, an unknown code is refused at once, and the services answer every root error with its status."""

from __future__ import annotations

import ast

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from deepfake.api_errors import ApiError, install_error_handlers
from deepfake.contracts.errors import ERROR_CATALOGUE, GENERIC_CODES, ServiceError
from deepfake.settings import REPO_ROOT
from deepfake.uploads import UploadError
from gateway.jobs.store import JobStoreUnavailable
from gateway.preprocessor_client import PreprocessorError
from preprocessor.errors import VideoError
from preprocessor.service import ServiceBusyError

ROOT_ERRORS = {"ServiceError", "ApiError", "UploadError", "VideoError", "PreprocessorError"}


def raised_codes() -> dict[str, str]:
    """code -> where, for every ``<root error>("literal", ...)`` in the services and the CLI."""
    codes = {}
    for folder in ("deepfake", "cli", "gateway", "preprocessor", "inference"):
        for path in (REPO_ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Name)
                    and node.func.id in ROOT_ERRORS
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                ):
                    codes[node.args[0].value] = f"{path.relative_to(REPO_ROOT)}:{node.lineno}"
    return codes


def test_every_raised_code_is_in_the_catalogue():
    codes = raised_codes()
    assert len(codes) > 30  # the scan finds the raises
    missing = {code: where for code, where in codes.items() if code not in ERROR_CATALOGUE}
    assert not missing


def test_the_generic_codes_are_catalogue_codes_of_their_status():
    assert all(ERROR_CATALOGUE[code][0] == status for status, code in GENERIC_CODES.items())


def test_an_unknown_code_is_refused_when_raised():
    with pytest.raises(ValueError, match="ERROR_CATALOGUE"):
        ApiError("no_such_code", "x")
    with pytest.raises(ValueError):
        VideoError("job_not_found", "a video error must carry a video code")


def raising(error: ServiceError):
    def endpoint() -> None:
        raise error

    return endpoint


def test_every_root_error_is_answered_with_its_code_s_status_and_headers():
    errors = {
        "/upload": UploadError("too_large", "big", max_bytes=1),
        "/video": VideoError("corrupt_video", "broken"),
        "/busy": ServiceBusyError(retry_after_s=7),
        "/store": JobStoreUnavailable("db at 10.0.0.5 down"),
        "/upstream": PreprocessorError("inference_unavailable", "later"),
        "/api": ApiError("job_not_finished", "wait", headers={"Retry-After": "2"}),
    }
    app = FastAPI()
    install_error_handlers(app)
    for path, error in errors.items():
        app.add_api_route(path, raising(error))
    with TestClient(app) as client:
        for path, error in errors.items():
            response = client.get(path)
            assert response.status_code == ERROR_CATALOGUE[error.code][0], path
            assert response.json()["error"]["code"] == error.code
            if error.headers:
                assert {k.lower(): v for k, v in error.headers.items()}.items() <= response.headers.items()
        store = client.get("/store")
        assert "10.0.0.5" not in store.text and store.headers["retry-after"] == "5"
        assert client.get("/busy").headers["retry-after"] == "7"
