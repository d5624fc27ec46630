"""The service's documentation runs: every console example in docs/howto/service.md and the README's service
section against a real server (output compared), the shell host example, and the reference page names every path
of the OpenAPI description."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from _service_server import ROOT, Server, running_server

HOWTO = ROOT / "docs" / "howto" / "service.md"
REFERENCE = ROOT / "docs" / "reference" / "service.md"

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def console_examples(text: str) -> list[tuple[str, str]]:
    """(command, expected output) pairs of the ```console blocks; a command continues on lines ending in '\\'."""
    pairs: list[tuple[str, str]] = []
    for block in re.findall(r"```console\n(.*?)```", text, re.S):
        command: list[str] = []
        output: list[str] = []
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            if lines[i].startswith("$ "):
                if command:
                    pairs.append(("\n".join(command), "\n".join(output)))
                command, output = [lines[i][2:]], []
                while (command[-1].endswith("\\") or "\n".join(command).count("'") % 2) and i + 1 < len(lines):
                    i += 1
                    command.append(lines[i])
            else:
                output.append(lines[i])
            i += 1
        if command:
            pairs.append(("\n".join(command), "\n".join(output)))
    return pairs


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("docs")) as running:
        yield running


def run(server: Server, command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BASE": server.url, "ADMIN_TOKEN": server.tokens.get("admin", ""),
           "TOKEN": server.tokens.get("investigator", ""), "MONITOR_TOKEN": server.tokens.get("monitor", "")}
    command = command.replace("http://127.0.0.1:8000", server.url)  # the README names the default address
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, cwd=cwd, timeout=60)


def test_every_console_example_of_the_howto_prints_what_the_page_shows(server: Server, tmp_path: Path) -> None:
    examples = console_examples(HOWTO.read_text(encoding="utf-8"))
    assert len(examples) >= 8
    for command, expected in examples:
        done = run(server, command, tmp_path)
        assert done.returncode == 0, (command, done.stderr)
        assert done.stdout.rstrip("\n") == expected, command


def test_the_readme_service_section_runs(tmp_path: Path) -> None:
    """The README's command serves without a users file (loopback only), so its curl call needs no token."""
    (tmp_path / "srv").mkdir()
    with running_server(tmp_path / "srv", users=False) as server:
        readme_examples_run(server, tmp_path)


def readme_examples_run(server: Server, tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## HTTP service") + 3:]
    section = section.split("\n## ", 1)[0] if section.count("\n## ") else section
    assert "escalation-rules serve --data" in section
    examples = console_examples(section)
    assert examples
    for command, expected in examples:
        done = run(server, command, tmp_path)
        assert (done.returncode, done.stdout.rstrip("\n")) == (0, expected), command


def test_the_shell_host_example_decides_records_and_is_refused(server: Server, tmp_path: Path) -> None:
    env = {**os.environ, "BASE": server.url, "TOKEN": server.tokens["admin"], "TRIAL": "host-example"}
    done = subprocess.run(["bash", str(ROOT / "examples" / "service_host.sh")], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert '"rule":"at-pass-one"' in lines and '"next":{"action":"wait"' in lines
    answers = [json.loads(line) for line in lines if line.startswith('{"trial"') and '"recorded"' in line]
    assert [(a["recorded"], a["replayed"]) for a in answers] == [([1], False), ([1], True), ([2], False)]
    assert lines[-1] == "(refused, curl exit status 22)" and "never screened eligible" in lines[-2]


def test_the_reference_page_names_every_endpoint_of_the_openapi_description() -> None:
    paths = json.loads((ROOT / "spec" / "openapi.json").read_text(encoding="utf-8"))["paths"]
    page = REFERENCE.read_text(encoding="utf-8")
    for path, item in paths.items():
        for method in item:
            assert f"`{method.upper()} {path}`" in page, f"{method.upper()} {path}"


def test_new_token_prints_a_token_and_its_hash_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "escalation_rules.cli", "serve", "--new-token"], capture_output=True,
                          text=True, timeout=60)
    first, second = done.stdout.splitlines()
    assert first.startswith("# give this token to the person; it is stored nowhere: ")
    assert second.startswith('token_hash = "scrypt$16384$8$1$')
