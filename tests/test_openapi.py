"""The gateway's OpenAPI document as frontend developers get it, the docs viewers offline, the committed
Postman collection in step with the code, and the list endpoint's pages; through the real app's HTTP."""

from __future__ import annotations

import json
import re

import pytest

from deepfake.contracts.errors import ERROR_CATALOGUE
from deepfake.contracts.schemas import DetectionResult, ErrorBody, JobCreated, JobStatus
from deepfake.settings import REPO_ROOT
from gateway.openapi import offline_document
from tests.test_gateway import KEY, assert_error_shape, make_gateway, post_video

API_DOCS = REPO_ROOT / "docs" / "api"
MODELS = {"JobCreated": JobCreated, "JobStatus": JobStatus, "DetectionResult": DetectionResult}


@pytest.fixture()
def client(tmp_path, random_model_path):
    with make_gateway(tmp_path, random_model_path, job_workers=0) as client:
        client.headers["X-API-Key"] = KEY
        yield client


@pytest.fixture()
def spec(client) -> dict:
    response = client.get("/openapi.json", headers={"X-API-Key": ""})  # public, like the docs
    assert response.status_code == 200
    return response.json()


def operations(spec: dict):
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            yield path, method, operation


def test_every_answer_has_an_example_and_errors_list_their_codes(spec):
    for path, method, operation in operations(spec):
        for status, response in operation["responses"].items():
            where = f"{method.upper()} {path} {status}"
            content = response.get("content", {})
            if status == "204":
                assert not content, where
                continue
            if status.startswith(("4", "5")):
                assert list(content) == ["application/json"], where
                body = content["application/json"]
                assert body["schema"] == {"$ref": "#/components/schemas/ErrorBody"}, where
                codes = re.findall(r"`([a-z_]+)`", response["description"])
                assert codes and set(body["examples"]) == set(codes), where
                for code in codes:
                    assert ERROR_CATALOGUE[code][0] == int(status), (where, code)
                    ErrorBody.model_validate(body["examples"][code]["value"])
                retry_after = "Retry-After" in response.get("headers", {})
                assert retry_after == (status in ("409", "429", "503")), where
                continue
            for media, body in content.items():
                if body.get("schema", {}).get("format") == "binary":
                    continue  # a JPEG: its schema says binary, an example cannot be written in JSON
                assert "example" in body, (where, media)
                ref = body["schema"].get("$ref", "") or body["schema"].get("items", {}).get("$ref", "")
                name = ref.rsplit("/", 1)[-1]
                if name in MODELS:
                    examples = body["example"] if isinstance(body["example"], list) else [body["example"]]
                    for example in examples:
                        MODELS[name].model_validate(example)


def test_the_422_documented_is_the_one_returned(client, spec):
    assert "HTTPValidationError" not in json.dumps(spec)
    documented = spec["paths"]["/v1/jobs"]["get"]["responses"]["422"]
    answer = client.get("/v1/jobs", params={"limit": 0})
    assert_error_shape(answer, 422, "invalid_request")
    assert set(answer.json()["error"]) == set(ErrorBody.model_validate(
        documented["content"]["application/json"]["examples"]["invalid_request"]["value"]
    ).error.model_dump())  # fmt: skip
    # String path parameters cannot fail validation: no 422 is promised where none can come.
    assert "422" not in spec["paths"]["/v1/jobs/{job_id}"]["get"]["responses"]
    assert "422" not in spec["paths"]["/v1/jobs/{job_id}"]["delete"]["responses"]


def test_servers_headers_and_webhook(client, spec, tmp_path, random_model_path):
    assert spec["servers"] == [{"url": "http://testserver", "description": "this gateway"}]
    created = spec["paths"]["/v1/jobs"]["post"]["responses"]["202"]
    assert "Location" in created["headers"]
    assert "Link" in spec["paths"]["/v1/jobs"]["get"]["responses"]["200"]["headers"]
    hook = spec["webhooks"]["job-finished"]["post"]
    assert hook["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/JobStatus")
    JobStatus.model_validate(hook["requestBody"]["content"]["application/json"]["example"])
    assert [p["name"] for p in hook["parameters"]] == ["x-deepfake-signature"]
    public = "https://detector.example/"
    with make_gateway(tmp_path / "public", random_model_path, public_url=public) as other:
        assert other.get("/openapi.json").json()["servers"][0]["url"] == "https://detector.example"


def test_docs_viewers_load_only_local_assets(client):
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html) + re.findall(r"url: ?'([^']+)'", html)
        assert urls, page
        for url in urls:
            assert url.startswith("/"), (page, url)  # nothing from another host (no CDN)
            assert client.get(url).status_code == 200, (page, url)
        assert "/openapi.json" in html
    app_page = client.get("/").text
    for url in re.findall(r"""(?:src|href)=["'](/static/[^"']+)["']""", app_page):
        assert client.get(url).status_code == 200, url


def outline(spec: dict) -> dict:
    """What a client relies on, without the generator's incidental wording: per operation its parameters,
    answers (status -> media types, error codes, headers) and body schemas; per schema its fields."""
    ops = {}
    for path, method, op in operations(spec):
        params = op.get("parameters", [])
        ops[f"{method} {path}"] = {
            "parameters": sorted((p["in"], p["name"], p.get("required", False)) for p in params),
            "body": sorted(op.get("requestBody", {}).get("content", {})),
            "responses": {
                status: [sorted(r.get("content", {})), re.findall(r"`([a-z_]+)`", r["description"]),
                         sorted(r.get("headers", {}))]
                for status, r in op["responses"].items()
            },
        }  # fmt: skip
    schemas = {
        name: [sorted(schema.get("properties", {})), sorted(schema.get("required", []))]
        for name, schema in spec["components"]["schemas"].items()
    }
    return {"operations": ops, "schemas": schemas, "webhooks": sorted(spec.get("webhooks", {}))}


def test_committed_openapi_and_postman_collection_match_the_code():
    committed = json.loads((API_DOCS / "openapi.json").read_text())
    # Compared by outline, not byte for byte: a FastAPI upgrade may reword the document, not the API.
    assert outline(committed) == outline(offline_document()), "run `make postman` and commit docs/api/"
    collection = json.loads((API_DOCS / "postman_collection.json").read_text())
    assert {v["key"]: v["value"] for v in collection["variable"]}["baseUrl"] == committed["servers"][0]["url"]

    def requests(items):
        for item in items:
            yield from requests(item["item"]) if "item" in item else [item["request"]]

    found = set()
    for request in requests(collection["item"]):
        path = "/" + "/".join(request["url"]["path"])
        found.add((request["method"].lower(), re.sub(r":([a-z_]+)", r"{\1}", path)))
    assert found == {(method, path) for path, method, _ in operations(committed)}


def test_job_list_pages_with_a_next_link(client, synth_videos):
    ids = [post_video(client, "/v1/jobs", synth_videos["pan"].path).json()["id"] for _ in range(3)]
    first = client.get("/v1/jobs", params={"limit": 2})
    assert [job["id"] for job in first.json()] == ids[::-1][:2]
    link = re.fullmatch(r'<([^>]+)>; rel="next"', first.headers["link"])
    assert link and link.group(1) == "http://testserver/v1/jobs?offset=2&limit=2"
    second = client.get(link.group(1))
    assert [job["id"] for job in second.json()] == ids[:1] and "link" not in second.headers
    job = first.json()[0]
    assert job["created_at"].endswith("Z") or job["created_at"].endswith("+00:00")
    created = post_video(client, "/v1/jobs", synth_videos["pan"].path).json()
    assert created["status_url"] == f"http://testserver/v1/jobs/{created['id']}"
    assert created["result_url"] == created["status_url"] + "/result"
