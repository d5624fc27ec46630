"""Security of the HTTP service against a real server: tokens, roles, trials apart, limits, trial ids, users files."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from _service_server import WORKED_EXAMPLE, Server, running_server
from escalation_rules.errors import EscalationRulesError
from escalation_rules.service.auth import hash_token, load_users

SIGN = {"type": "decision_signed", "at": "2025-03-20T09:00Z", "option": "escalate"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("secure")) as running:
        for trial in ("demo", "trial-b"):
            assert running.call("POST", "/v1/trials", {"id": trial, "protocol": "nct07117175"}, who="admin")[0] == 201
        assert running.call("POST", "/v1/trials/demo/events", WORKED_EXAMPLE, who="investigator")[0] == 201
        yield running


def serve(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "escalation_rules.cli", "serve", *argv], capture_output=True,
                          text=True, timeout=60, cwd=cwd)


def test_no_token_is_401(server: Server) -> None:
    status, body = server.call("GET", "/v1/trials/demo/status")
    assert status == 401 and body["error"] == "Authorization: missing (expected: Bearer TOKEN)"
    for method, path, body in (("POST", "/v1/protocols/nct07117175/decide", {"history": "1N"}),
                               ("GET", "/v1/protocols", None), ("GET", "/v1/protocols/nct07117175", None),
                               ("POST", "/v1/protocols/3+3-deescalate/oc", {"truth": [0.1, 0.2]}),
                               ("GET", "/v1/trials", None), ("GET", "/v1/whoami", None)):
        assert server.call(method, path, body)[0] == 401, path
    assert server.call("GET", "/v1/health")[0] == 200 and server.call("GET", "/meeting")[0] == 200


@pytest.mark.parametrize("token", ["wrong-token-0123456789", "test-token-admin-012345678", "x" * 600])
def test_a_wrong_token_is_401(server: Server, token: str) -> None:
    status, body = server.call("GET", "/v1/trials/demo/status", who=token)
    assert status == 401 and body["error"] == "Authorization: unknown token"


def test_a_malformed_authorization_header_is_401(server: Server) -> None:
    status, body = server.call("GET", "/v1/trials/demo/status",
                               headers={"Authorization": f"Basic {server.tokens['admin']}"})
    assert status == 401 and body["error"] == "Authorization: expected: Bearer TOKEN"


def test_a_monitor_reads_but_cannot_write(server: Server) -> None:
    assert server.call("GET", "/v1/trials/demo/status", who="monitor")[0] == 200
    status, body = server.call("POST", "/v1/trials/demo/events", {**SIGN, "role": "monitor"}, who="monitor")
    assert status == 403 and body["error"] == "trial demo: K. Ito holds monitor, which records nothing (read only)"
    event = {"type": "screened", "at": "2025-03-21", "patient": "P09", "eligible": True}
    assert server.call("POST", "/v1/trials/demo/events", event, who="monitor")[0] == 403
    assert server.call("POST", "/v1/trials", {"id": "new", "protocol": "nct07117175"}, who="monitor")[0] == 403


def test_a_sponsor_cannot_sign_as_investigator_nor_in_another_name(server: Server) -> None:
    status, body = server.call("POST", "/v1/trials/demo/events", {**SIGN, "role": "investigator"}, who="sponsor")
    assert status == 403 and body["error"].startswith("event: role: R. Zhou holds sponsor; a decision_signed event "
                                                      "is recorded in the caller's own role only")
    status, body = server.call("POST", "/v1/trials/demo/events", {**SIGN, "person": "Dr L. Wang"}, who="sponsor")
    assert status == 403 and body["error"].startswith("event: person: events are recorded in the name of the "
                                                      "authenticated person (R. Zhou)")
    assert len(server.call("GET", "/v1/trials/demo/log", who="monitor")[1]["events"]) == len(WORKED_EXAMPLE)


def test_one_person_cannot_sign_two_roles_of_one_decision(server: Server) -> None:
    status, body = server.call("POST", "/v1/trials/demo/events", {**SIGN, "role": "investigator"}, who="dual")
    assert status == 201
    status, body = server.call("POST", "/v1/trials/demo/events", {**SIGN, "role": "sponsor"}, who="dual")
    assert status == 422 and "one person cannot sign in two roles" in body["error"]
    status, body = server.call("POST", "/v1/trials/demo/events", SIGN, who="dual")  # holds two: must say which
    assert status == 422 and body["error"].startswith("event: role: missing")


def test_a_token_for_trial_a_cannot_read_or_write_trial_b(server: Server) -> None:
    for method, path in (("GET", "/v1/trials/trial-b/status"), ("GET", "/v1/trials/trial-b/log"),
                         ("GET", "/v1/trials/trial-b/export"), ("GET", "/v1/trials/trial-b")):
        status, body = server.call(method, path, who="investigator")
        assert status == 403 and body["error"] == "trial trial-b: Dr L. Wang holds no role for this trial"
    assert server.call("POST", "/v1/trials/trial-b/events", WORKED_EXAMPLE[0], who="investigator")[0] == 403
    assert server.call("GET", "/v1/trials/demo/status", who="other")[0] == 403
    assert [t["trial"] for t in server.call("GET", "/v1/trials", who="other")[1]["trials"]] == ["trial-b"]


def raw_post(server: Server, path: str, head: dict[str, str], chunks: list[bytes]) -> tuple[int, dict[str, str]]:
    """Send a request's head and some body, then read the answer (the server may answer before the body ends)."""
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    conn.putrequest("POST", path)
    for name, value in {**head, "Authorization": f"Bearer {server.tokens['admin']}",
                        "Content-Type": "application/json"}.items():
        conn.putheader(name, value)
    conn.endheaders()
    for chunk in chunks:
        conn.send(chunk)
    response = conn.getresponse()
    answer = (response.status, json.loads(response.read()))
    conn.close()
    return answer


def test_an_oversized_body_is_413_and_stores_nothing(server: Server) -> None:
    status, body = raw_post(server, "/v1/trials/demo/events", {"Content-Length": "5000000"}, [b"[" * 1000])
    assert status == 413 and body["error"] == "request body: 5000000 bytes; the limit is 1000000 bytes"
    # without Content-Length (chunked), the limit is counted as the body arrives
    chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
    status, body = raw_post(server, "/v1/trials/demo/events", {"Transfer-Encoding": "chunked"}, [chunk] * 17)
    assert status == 413 and body["error"] == "request body: more than 1000000 bytes; the limit is 1000000 bytes"
    assert len(server.call("GET", "/v1/trials/demo/log", who="monitor")[1]["events"]) <= len(WORKED_EXAMPLE) + 1


def test_too_many_events_in_one_request_are_refused(server: Server) -> None:
    batch = [{"type": "screened", "at": "2025-03-21", "patient": f"Q{i}", "eligible": True} for i in range(1001)]
    status, body = server.call("POST", "/v1/trials/demo/events", batch, who="investigator")
    assert status == 422
    assert body["error"] == "events: expected an event object or a list of 1 to 1000 events (got 1001)"


@pytest.mark.parametrize("trial", ["..", "..%2F..%2Fetc", "%2e%2e", "a.db", "a%00b", "-x", "x" * 65, "caf%C3%A9"])
def test_path_traversal_in_trial_ids_is_refused(server: Server, trial: str) -> None:
    status, body = server.call("GET", f"/v1/trials/{trial}/status", who="admin")
    assert status in (404, 422), body
    status, body = server.call("POST", "/v1/trials", {"id": trial.replace("%2F", "/").replace("%2e", "."),
                                                      "protocol": "nct07117175"}, who="admin")
    assert status == 422 and body["error"].startswith("trial: expected letters, digits")
    assert sorted(p.name for p in server.data.iterdir() if p.suffix == ".db") == ["demo.db", "trial-b.db"]


def test_a_users_file_with_a_plaintext_token_is_refused_at_start(tmp_path: Path) -> None:
    users = tmp_path / "users.toml"
    users.write_text('[[users]]\nperson = "Dr A"\ntoken = "plain-secret-token-0123"\nroles = { demo = ["admin"] }\n')
    done = serve("--data", str(tmp_path / "d"), "--users", str(users), "--port", "1", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"escalation-rules serve: {users}: users[0].token: a plaintext token is refused; "
                                   f"store only token_hash (make one with: escalation-rules serve --hash-token)")
    users.write_text('[[users]]\nperson = "Dr A"\ntoken_hash = "plain-secret-token-0123"\nroles = { d = ["admin"] }\n')
    with pytest.raises(EscalationRulesError, match=r"users\[0\]\.token_hash: expected a salted hash"):
        load_users(str(users))


@pytest.mark.parametrize(("text", "line"), [
    ('[[users]]\nperson = "A"\ntoken_hash = "H"\nroles = { demo = ["boss"] }\n', "users[0].roles.demo: unknown role"),
    ('[[users]]\nperson = "A"\ntoken_hash = "H"\nroles = { "../x" = ["admin"] }\n', "users[0].roles.../x: not a trial"),
    ('[[users]]\nperson = "A"\ntoken_hash = "H"\nroles = {}\n', "users[0].roles: expected a table"),
    ('[[users]]\nperson = ""\ntoken_hash = "H"\nroles = { d = ["admin"] }\n', "users[0].person: expected a non-empty"),
    ('[[users]]\nperson = "A"\ntoken_hash = "H"\nroles = { d = ["admin"] }\n[[users]]\nperson = "A"\n'
     'token_hash = "H"\nroles = { d = ["admin"] }\n', "users[1].person: 'A' appears twice"),
    ("users = 3\n", "users: expected a non-empty list"),
    ("[[users]\n", "not valid TOML"),
])
def test_a_bad_users_file_is_refused_with_one_line_naming_the_key(tmp_path: Path, text: str, line: str) -> None:
    users = tmp_path / "users.toml"
    users.write_text(text.replace('"H"', f'"{hash_token("a-token-of-sixteen-chars")}"'))
    with pytest.raises(EscalationRulesError) as caught:
        load_users(str(users))
    assert str(caught.value).startswith(f"{users}: ") and line in str(caught.value) and "\n" not in str(caught.value)


def test_without_users_the_server_refuses_any_address_but_loopback(tmp_path: Path) -> None:
    done = serve("--data", str(tmp_path / "d"), "--host", "0.0.0.0", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip() == (
        "escalation-rules serve: --host 0.0.0.0: without --users the server answers on loopback only "
        "(127.0.0.1, ::1, localhost); give a users file to serve other machines")


def test_hash_token_prints_a_line_the_users_file_accepts(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "escalation_rules.cli", "serve", "--hash-token"],
                          input="a-long-enough-secret-token\n", capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith('token_hash = "scrypt$')
    users = tmp_path / "users.toml"
    users.write_text(f'[[users]]\nperson = "Dr A"\n{done.stdout}roles = {{ demo = ["investigator"] }}\n')
    user = load_users(str(users)).authenticate("a-long-enough-secret-token")
    assert user is not None and user.person == "Dr A" and "a-long-enough" not in users.read_text()
    short = subprocess.run([sys.executable, "-m", "escalation_rules.cli", "serve", "--hash-token"], input="short\n",
                           capture_output=True, text=True, timeout=60)
    assert short.returncode == 2 and "token: expected at least 16 characters" in short.stderr


def test_a_port_in_use_is_refused_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = serve("--data", str(tmp_path / "d"), "--port", str(port), cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip() == (
        f"escalation-rules serve: --port {port}: cannot listen on 127.0.0.1:{port} (Address already in use)")


@pytest.mark.parametrize("workers", ["0", "65"])
def test_a_number_of_worker_processes_out_of_range_is_refused_with_one_line(tmp_path: Path, workers: str) -> None:
    done = serve("--data", str(tmp_path / "d"), "--workers", workers, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip() == (
        f"escalation-rules serve: --workers: expected 1 to 64 processes (got {workers})")
