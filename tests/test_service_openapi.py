"""The shipped OpenAPI description (spec/openapi.json) is what the code generates and what the server serves."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from _service_server import ROOT, Server, running_server
from escalation_rules.cli import main

SHIPPED = ROOT / "spec" / "openapi.json"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("openapi")) as running:
        yield running


def test_the_shipped_openapi_file_is_what_serve_openapi_prints(capsys: pytest.CaptureFixture[str]) -> None:
    """Regenerate with: escalation-rules serve --openapi > spec/openapi.json"""
    assert main(["serve", "--openapi"]) == 0
    assert capsys.readouterr().out == SHIPPED.read_text(encoding="utf-8")


def test_the_server_serves_the_shipped_openapi_description(server: Server) -> None:
    status, served = server.call("GET", "/v1/openapi.json")
    assert status == 200 and served == json.loads(SHIPPED.read_text(encoding="utf-8"))


def test_the_description_is_openapi_3_1_with_the_fixed_points_of_the_contract() -> None:
    doc = json.loads(SHIPPED.read_text(encoding="utf-8"))
    assert doc["openapi"].startswith("3.1")
    paths = doc["paths"]
    for path, method in (("/v1/health", "get"), ("/v1/protocols", "get"), ("/v1/protocols/{protocol}", "get"),
                         ("/v1/protocols/{protocol}/data-items", "get"), ("/v1/protocols/{protocol}/decide", "post"),
                         ("/v1/protocols/{protocol}/screen", "post"), ("/v1/protocols/{protocol}/oc", "post"),
                         ("/v1/trials", "post"), ("/v1/trials/{trial}/events", "post"),
                         ("/v1/trials/{trial}/status", "get"), ("/v1/trials/{trial}/log", "get"),
                         ("/v1/trials/{trial}/verify", "get"), ("/v1/trials/{trial}/export", "get")):
        assert method in paths[path], path
    events = paths["/v1/trials/{trial}/events"]["post"]
    assert any(p["name"] == "idempotency-key" for p in events["parameters"])
    assert events["security"] == [{"bearer": []}]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_no_documentation_page_loads_anything_from_a_cdn(server: Server) -> None:
    for path in ("/docs", "/redoc"):
        assert server.call("GET", path)[0] == 404
    status, page = server.call("GET", "/meeting")
    assert status == 200 and "http://" not in page.replace(server.url, "") and "https://" not in page
