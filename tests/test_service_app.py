"""The HTTP service against a real server process: every endpoint answers what the CLI prints for the same input."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from _service_server import ROOT, WORKED_EXAMPLE, Server, running_server
from escalation_rules import __version__
from escalation_rules.cli import main


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("serve")) as running:
        running.default_who = "monitor"  # every endpoint but health needs a token; a monitor's reads them all
        yield running


def cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    """Run the CLI from the repository root; its exit status and the JSON it printed."""
    capsys.readouterr()
    status = main(list(argv))
    return status, json.loads(capsys.readouterr().out)


def cli_error(capsys: pytest.CaptureFixture[str], *argv: str) -> list[str]:
    """The lines the CLI writes on stderr for a refused input, without the program prefix."""
    capsys.readouterr()
    assert main(list(argv)) == 2
    return [line.split(": ", 1)[1] for line in capsys.readouterr().err.splitlines()]


def new_trial(server: Server, trial: str, protocol: str = "nct07117175") -> None:
    status, body = server.call("POST", "/v1/trials", {"id": trial, "protocol": protocol}, who="admin")
    assert status == 201, body


def test_health_answers_200_with_the_package_version(server: Server) -> None:
    assert server.call("GET", "/v1/health", who="") == (200, {"status": "ok", "version": __version__})


def test_protocols_lists_the_shipped_protocol_and_the_builtin_designs(server: Server) -> None:
    status, body = server.call("GET", "/v1/protocols")
    names = {p["name"]: p["kind"] for p in body["protocols"]}
    assert status == 200
    assert names["nct07117175"] == "protocol" and names["3+3-deescalate"] == "design"


def test_show_and_data_items_are_the_cli_json(server: Server, capsys: pytest.CaptureFixture[str],
                                              in_repo: Path) -> None:
    assert server.call("GET", "/v1/protocols/nct07117175") == (200, cli_json(capsys, "show", "spec/nct07117175",
                                                                             "--json")[1])
    assert server.call("GET", "/v1/protocols/3+3-deescalate?doses=3") == (
        200, cli_json(capsys, "show", "3+3-deescalate", "--doses", "3", "--json")[1])
    assert server.call("GET", "/v1/protocols/nct07117175/data-items") == (
        200, cli_json(capsys, "data-items", "spec/nct07117175", "--json")[1])


@pytest.mark.parametrize("history", ["", "1N", "1N [escalate] 2NNN", "1N [escalate] 2NTN", "1T"])
def test_decide_answers_exactly_the_next_json_object(server: Server, capsys: pytest.CaptureFixture[str],
                                                     in_repo: Path, history: str) -> None:
    expected = cli_json(capsys, "next", "spec/nct07117175", history, "--json")[1]
    assert server.call("POST", "/v1/protocols/nct07117175/decide", {"history": history}) == (200, expected)


def test_decide_takes_json_entries_and_builtin_designs_with_doses(server: Server, capsys: pytest.CaptureFixture[str],
                                                                 in_repo: Path, tmp_path: Path) -> None:
    entries = [{"dose": 1, "outcomes": "N"}, {"decision": "escalate"}, {"dose": 2, "outcomes": "NTN"}]
    (tmp_path / "h.json").write_text(json.dumps(entries))
    expected = cli_json(capsys, "next", "spec/nct07117175", "--history-json", str(tmp_path / "h.json"), "--json")[1]
    assert server.call("POST", "/v1/protocols/nct07117175/decide", {"history": entries}) == (200, expected)
    expected = cli_json(capsys, "next", "3+3-deescalate", "--doses", "3", "1NNN 2NTT", "--json")[1]
    assert server.call("POST", "/v1/protocols/3+3-deescalate/decide?doses=3", {"history": "1NNN 2NTT"}) == (
        200, expected)


def test_a_refused_history_is_422_with_the_cli_message(server: Server, capsys: pytest.CaptureFixture[str],
                                                       in_repo: Path) -> None:
    lines = cli_error(capsys, "next", "spec/nct07117175", "1NTTT", "--json")
    status, body = server.call("POST", "/v1/protocols/nct07117175/decide", {"history": "1NTTT"})
    assert status == 422 and body == {"error": lines[0], "problems": lines}


@pytest.mark.parametrize(("path", "body", "line"), [
    ("/v1/protocols/nope/decide", {"history": ""}, "protocol 'nope': not known to this server"),
    ("/v1/protocols/nct07117175/decide?doses=3", {"history": ""}, "doses: applies to built-in designs only"),
    ("/v1/protocols/3+3-deescalate/decide?doses=41", {"history": ""}, "doses: expected 1 to 40 (got 41)"),
    ("/v1/protocols/nct07117175/decide", {"history": 5}, "body.history: "),
    ("/v1/protocols/nct07117175/decide", {"histories": "1N"}, "body.histories: "),
    ("/v1/protocols/nct07117175/decide", [1], "body: "),
])
def test_bad_decide_input_is_refused_with_one_line_naming_the_field(server: Server, path: str, body: Any,
                                                                    line: str) -> None:
    status, answer = server.call("POST", path, body)
    assert status in (404, 422) and answer["error"].startswith(line), answer
    assert answer["problems"][0] == answer["error"]


def test_invalid_json_is_a_422_not_a_500(server: Server) -> None:
    status, answer = server.call("POST", "/v1/protocols/nct07117175/decide", raw=b"{",
                                 headers={"Content-Type": "application/json"})
    assert status == 422 and answer["error"].startswith("body")


@pytest.mark.parametrize(("record", "outcome"), [("eligible", "eligible"), ("not-eligible", "not eligible"),
                                                 ("undetermined", "undetermined")])
def test_screen_answers_the_screen_json_result_with_200(server: Server, capsys: pytest.CaptureFixture[str],
                                                        in_repo: Path, record: str, outcome: str) -> None:
    path = f"spec/patients/{record}.json"
    exit_status, expected = cli_json(capsys, "screen", "spec/nct07117175", path, "--json")
    status, body = server.call("POST", "/v1/protocols/nct07117175/screen", json.loads(Path(path).read_text()))
    assert (status, body) == (200, expected)
    assert body["outcome"] == outcome and body["exit_status"] == exit_status


def test_screen_takes_a_fhir_bundle_and_names_each_values_resource(server: Server, capsys: pytest.CaptureFixture[str],
                                                                   in_repo: Path) -> None:
    """A FHIR Bundle posted to screen gives what screen --json prints for it (sources included)."""
    pytest.importorskip("fhir.resources")
    path = "examples/fhir/not-eligible.json"
    exit_status, expected = cli_json(capsys, "screen", "spec/nct07117175", path, "--json")
    status, body = server.call("POST", "/v1/protocols/nct07117175/screen", json.loads(Path(path).read_text()))
    assert (status, body) == (200, expected) and body["input"] == "fhir" and exit_status == 3
    bad = json.loads(Path(path).read_text())
    bad["entry"][0]["resource"]["birthDate"] = "15/06/1968"
    status, body = server.call("POST", "/v1/protocols/nct07117175/screen", bad)
    assert status == 422 and body["error"].startswith("record: entry[0] (Patient/p1): birthDate: ")


def test_a_refused_record_is_422_naming_the_field(server: Server) -> None:
    status, body = server.call("POST", "/v1/protocols/nct07117175/screen", {"id": "P9", "bogus": 1})
    assert status == 422 and body["error"].startswith("record: bogus: unknown field")
    assert server.call("POST", "/v1/protocols/nct07117175/screen", [1])[0] == 422


def test_oc_answers_the_oc_json_object(server: Server, capsys: pytest.CaptureFixture[str], in_repo: Path) -> None:
    expected = cli_json(capsys, "oc", "spec/nct07117175", "--truth", "1/20,1/10,1/5,7/20", "--json")[1]
    assert server.call("POST", "/v1/protocols/nct07117175/oc", {"truth": "1/20,1/10,1/5,7/20"}) == (200, expected)
    expected = cli_json(capsys, "oc", "3+3-deescalate", "--truth", "0.1,0.3", "--json", "--no-bounds")[1]
    assert server.call("POST", "/v1/protocols/3+3-deescalate/oc", {"truth": [0.1, 0.3], "bounds": False}) == (
        200, expected)


@pytest.mark.parametrize(("body", "line"), [
    ({"truth": [0.1] * 41}, "doses: expected 1 to 40 (got 41)"),
    ({"truth": [0.1, 1.5]}, "--truth: entry 2"),
    ({"truth": [0.1, 0.2], "policy": "/etc/passwd"}, "policy: expected one of default"),
    ({"truth": [0.1, 0.2], "overdose_patients": 10**9}, "overdose_patients: expected 1 to 1000"),
])
def test_oc_keeps_the_cli_limits(server: Server, body: dict[str, Any], line: str) -> None:
    status, answer = server.call("POST", "/v1/protocols/3+3-deescalate/oc", body)
    assert status == 422 and answer["error"].startswith(line), answer


def test_a_trial_records_events_and_answers_status_log_verify_and_export(server: Server) -> None:
    new_trial(server, "demo")
    assert server.call("POST", "/v1/trials", {"id": "demo", "protocol": "nct07117175"}, who="admin")[0] == 409
    status, body = server.call("POST", "/v1/trials/demo/events", WORKED_EXAMPLE[0], who="investigator")
    assert (status, body["recorded"], body["recorded_by"]) == (201, [1], "Dr L. Wang")
    status, body = server.call("POST", "/v1/trials/demo/events", WORKED_EXAMPLE[1:], who="investigator")
    assert (status, body["recorded"]) == (201, [2, 3, 4, 5, 6])
    status, body = server.call("GET", "/v1/trials/demo/status?as_of=2025-03-19T12:00Z", who="monitor")
    assert status == 200 and body["history"] == "1N" and body["next"]["action"] == "sign"
    assert body["next"]["options"] == ["escalate", "terminate"] and body["events"] == 6
    assert server.call("GET", "/v1/trials/demo/status?as_of=2025-03-10", who="monitor")[1]["next"]["action"] == "wait"
    status, log = server.call("GET", "/v1/trials/demo/log", who="monitor")
    assert [e["seq"] for e in log["events"]] == [1, 2, 3, 4, 5, 6]
    assert {e["recorded_by"] for e in log["events"]} == {"Dr L. Wang"}
    assert log["events"][5]["event"]["person"] == "Dr L. Wang"  # the adjudication is in the caller's name
    status, report = server.call("GET", "/v1/trials/demo/verify", who="monitor")
    assert status == 200 and report["ok"] and report["events"] == 6 and report["problems"] == []
    assert report["signed"] is None and report["head"].startswith("6:")  # unsigned: the head, and a note saying so
    status, text = server.call("GET", "/v1/trials/demo/export", who="monitor")
    header, *lines = text.splitlines()  # as `trial export` writes it: the protocol first, then the events
    assert status == 200 and "protocol" in json.loads(header)
    assert [json.loads(line) for line in lines] == [e["event"] for e in log["events"]]
    status, info = server.call("GET", "/v1/trials/demo", who="sponsor")
    assert status == 200 and info["signing_roles"] == ["sponsor"] and info["protocol"]["id"] == "NCT07117175"


def test_a_list_of_events_is_one_transaction(server: Server) -> None:
    new_trial(server, "atomic")
    batch = [{"type": "screened", "at": "2025-01-02", "patient": "P1", "eligible": True},
             {"type": "enrolled", "at": "2025-01-03", "patient": "P1", "dose": 2}]
    status, body = server.call("POST", "/v1/trials/atomic/events", batch, who="admin")
    assert status == 422 and body["error"].startswith("events[1] (enrolled P1")
    assert server.call("GET", "/v1/trials/atomic/log", who="admin")[1]["events"] == []


def test_an_idempotency_key_makes_a_retry_record_nothing(server: Server) -> None:
    new_trial(server, "retry")
    event = {"type": "screened", "at": "2025-01-02", "patient": "P1", "eligible": True}
    first = server.call("POST", "/v1/trials/retry/events", event, who="admin", headers={"Idempotency-Key": "k-1"})
    again = server.call("POST", "/v1/trials/retry/events", event, who="admin", headers={"Idempotency-Key": "k-1"})
    assert first[0] == again[0] == 201 and first[1]["recorded"] == again[1]["recorded"] == [1]
    assert (first[1]["replayed"], again[1]["replayed"]) == (False, True)
    other = {**event, "patient": "P2"}
    status, body = server.call("POST", "/v1/trials/retry/events", other, who="admin",
                               headers={"Idempotency-Key": "k-1"})
    assert status == 422 and body["error"].startswith("Idempotency-Key: already used")
    assert len(server.call("GET", "/v1/trials/retry/log", who="admin")[1]["events"]) == 1


def test_unknown_paths_and_methods_answer_json(server: Server) -> None:
    status, body = server.call("GET", "/v1/nothing")
    assert status == 404 and body["error"] == "/v1/nothing: no such endpoint (see /v1/openapi.json)"
    status, body = server.call("DELETE", "/v1/health")
    assert status == 405 and body["problems"] == [body["error"]]


def test_the_checkout_protocols_are_served_by_default(tmp_path: Path) -> None:
    """From the repository, ``serve`` finds spec/ on its own (the README's one command)."""
    assert (ROOT / "spec" / "nct07117175" / "protocol.toml").is_file()
    from escalation_rules.service._cli import _protocol_folders

    assert _protocol_folders(None) == [ROOT / "spec"] or _protocol_folders(None) == [Path("spec")]


def test_status_as_of_and_log_after_are_checked(server: Server) -> None:
    new_trial(server, "reads")
    assert server.call("POST", "/v1/trials/reads/events", WORKED_EXAMPLE[:3], who="admin")[0] == 201
    status, body = server.call("GET", "/v1/trials/reads/status?as_of=2025-02-30", who="admin")
    assert status == 422 and body["error"].startswith("as_of: expected an ISO 8601 date or date-time")
    assert [e["seq"] for e in server.call("GET", "/v1/trials/reads/log?after=1", who="admin")[1]["events"]] == [2, 3]
    assert server.call("GET", "/v1/trials/reads/log?after=-1", who="admin")[0] == 422
    assert server.call("GET", "/v1/trials/nosuch/status", who="admin")[0] == 404


def test_without_users_a_loopback_server_needs_no_token_and_signatures_name_their_person(tmp_path: Path) -> None:
    with running_server(tmp_path, users=False) as open_server:
        assert open_server.call("POST", "/v1/trials", {"id": "solo", "protocol": "nct07117175"})[0] == 201
        assert open_server.call("POST", "/v1/trials/solo/events", WORKED_EXAMPLE[:5])[0] == 201
        adjudication = {**WORKED_EXAMPLE[5], "role": "investigator", "person": "Dr L. Wang"}
        status, body = open_server.call("POST", "/v1/trials/solo/events", adjudication)
        assert status == 201 and body["recorded_by"] == "anonymous (no users file)"
        status, body = open_server.call("POST", "/v1/trials/solo/events", {
            "type": "decision_signed", "at": "2025-03-20", "option": "escalate", "role": "sponsor"})
        assert status == 422 and body["error"] == "event (decision_signed): person: missing"


# -- decisions answered again straight from the event loop (QuickDecide)


def asgi_call(app: Any, method: str, path: str, body: bytes, headers: list[tuple[bytes, bytes]],
              query: bytes = b"", chunk: int = 0) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """One request through an ASGI application in this process (the body in pieces of ``chunk`` bytes)."""
    import asyncio

    pieces = [body[i:i + chunk] for i in range(0, len(body), chunk)] if chunk else [body]
    messages = [{"type": "http.request", "body": p, "more_body": i < len(pieces) - 1} for i, p in enumerate(pieces)]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "root_path": "", "query_string": query, "headers": headers,
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000)}
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], start["headers"], b"".join(m.get("body", b"") for m in sent if m["type"] ==
                                                       "http.response.body")


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, str]:
    from escalation_rules.service.app import ServiceConfig, create_app, find_protocols
    from escalation_rules.service.auth import hash_token, parse_users

    token = "quick-token-0123456789abcdef"
    users = parse_users({"users": [{"person": "Q", "token_hash": hash_token(token), "roles": {"*": ["monitor"]}}]},
                        "users.toml")
    app = create_app(ServiceConfig(tmp_path_factory.mktemp("quick"), users, find_protocols([ROOT / "spec"])))
    return app, token


def test_a_decision_answered_again_is_the_same_bytes_and_headers(quick: tuple[Any, str]) -> None:
    """The first decide goes through the endpoint, the second is a kept answer: status, headers, body are equal."""
    app, token = quick
    headers = [(b"authorization", f"Bearer {token}".encode()), (b"content-type", b"application/json")]
    body = json.dumps({"history": "1N [escalate] 2NT"}).encode()
    first = asgi_call(app, "POST", "/v1/protocols/nct07117175/decide", body, headers)
    assert first[0] == 200 and json.loads(first[2])["history"] == "1N [escalate] 2NT"
    assert asgi_call(app, "POST", "/v1/protocols/nct07117175/decide", body, headers) == first
    assert asgi_call(app, "POST", "/v1/protocols/nct07117175/decide", body, headers, chunk=5) == first


class Inner:
    """An application behind QuickDecide that records what reached it."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b"inner"})


@pytest.mark.parametrize(("change", "reason"), [
    ({"token": "quick-token-unknown-0123456789"}, "a token never checked"),
    ({"token": None}, "no token"),
    ({"content_type": b"text/plain"}, "not declared JSON"),
    ({"query": b"doses=3"}, "a query"),
    ({"body": b'{"history": "1N", "extra": 1}'}, "an unknown field"),
    ({"body": b'{"history": ["1N"]}'}, "not a string"),
    ({"body": b'{"history": "1N"'}, "not JSON"),
    ({"body": b'{"history": "1T"}'}, "an answer not kept"),
    ({"body": b'{"history": "1N"}' + b" " * 5000}, "over 4 KiB"),
    ({"path": "/v1/protocols/other/decide"}, "another protocol"),
    ({"method": "PUT"}, "another method"),
])
def test_only_the_plainest_request_with_a_kept_answer_is_answered_before_routing(change: dict[str, Any],
                                                                                 reason: str) -> None:
    """Anything else reaches the endpoint with its whole body, even when sent in pieces."""
    from escalation_rules.service.app import Answers, QuickDecide
    from escalation_rules.service.auth import hash_token, parse_users

    token = "quick-token-0123456789abcdef"
    users = parse_users({"users": [{"person": "Q", "token_hash": hash_token(token, salt=b"0123456789abcdef"),
                                    "roles": {"*": ["monitor"]}}]}, "users.toml")
    assert users.authenticate(token) is not None  # checked once: remembered from now on
    answers = Answers()
    answers.keep("nct07117175", None, "s1N", b'{"kept": true}')
    inner = Inner()
    quick = QuickDecide(inner, answers, users, 1_000_000)
    plain = {"token": token, "content_type": b"application/json", "query": b"", "body": b'{"history": "1N"}',
             "path": "/v1/protocols/nct07117175/decide", "method": "POST"}
    assert asgi_call(quick, "POST", plain["path"], plain["body"], [
        (b"authorization", f"Bearer {token}".encode()), (b"content-type", b"application/json")])[2] == b'{"kept": true}'
    asked = {**plain, **change}
    headers = [(b"content-type", asked["content_type"])]
    if asked["token"]:
        headers.append((b"authorization", f"Bearer {asked['token']}".encode()))
    status, _, body = asgi_call(quick, asked["method"], asked["path"], asked["body"], headers, asked["query"], chunk=7)
    assert (status, body) == (299, b"inner"), reason
    assert inner.bodies == [asked["body"]]


def test_a_burst_of_one_new_history_is_decided_once_and_a_refusal_is_not_kept() -> None:
    """Requests for a history that is being decided wait for that decision; a refused one is asked again."""
    import asyncio

    from escalation_rules.service.app import Answers

    answers = Answers()
    runs: list[str] = []

    async def burst() -> list[bytes]:
        async def compute() -> bytes:
            runs.append("run")
            await asyncio.sleep(0.01)
            return b"answer"

        return list(await asyncio.gather(*(answers.answer("p", None, "s1N", compute) for _ in range(20))))

    assert asyncio.run(burst()) == [b"answer"] * 20 and runs == ["run"]
    assert answers.get("p", None, "s1N") == b"answer"

    async def refused() -> None:
        raise ValueError("refused")

    for _ in range(2):
        with pytest.raises(ValueError, match="refused"):
            asyncio.run(answers.answer("p", None, "s1X", refused))
    assert answers.get("p", None, "s1X") is None
