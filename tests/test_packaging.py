"""The package as a user installs it: a wheel, in a fresh virtual environment, used from another folder."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def readme_main_job() -> list[list[str]]:
    """The ``escalation-rules`` commands of the README's first block (after the install), as argument lists."""
    first = re.findall(r"```sh\n(.*?)```", README, re.S)[0]
    commands = [shlex.split(part) for part in " ".join(first.split()).split("&&")]
    return [argv for argv in commands if argv and argv[0] == "escalation-rules"]


def test_every_subpackage_is_listed_for_the_wheel():
    """pyproject.toml lists every package under src/ (the list is explicit because spec/ is mapped into it)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(ROOT / "src").parts) for p in (ROOT / "src").rglob("__init__.py")}
    assert found | {"escalation_rules._shipped"} == set(config["packages"])
    assert config["package-dir"]["escalation_rules._shipped"] == "spec"


def test_the_readme_main_job_names_the_shipped_protocol_not_a_path():
    """The main job runs from anywhere: it names the shipped protocol, not a path in the clone."""
    job = readme_main_job()
    assert [argv[1] for argv in job] == ["verify", "next"]
    assert all("nct07117175" in argv and not any("/" in a for a in argv) for argv in job)


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_runs_the_readme_main_job_from_another_folder(tmp_path):
    """Build the wheel from a copy of the sources, install it alone into a new venv, run the README's main job.

    The new environment gets the dependencies from this one's site-packages
    (a ``.pth`` line), so nothing is downloaded; the package itself comes only
    from the wheel, and the commands run in an empty folder.
    """
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".*", "build", "dist")
    for name in ("src", "spec"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(source)],
                   check=True, capture_output=True, text=True)
    wheel = next(dist.glob("escalation_rules-*.whl"))

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    fresh_site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                     check=True, capture_output=True, text=True).stdout.strip())
    (fresh_site / "_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
                   check=True, capture_output=True, text=True)

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    where = subprocess.run([str(python), "-c", "import escalation_rules.spec as s; print(s.__file__, s.shipped_dir())"],
                           cwd=work, env=env, check=True, capture_output=True, text=True).stdout
    assert str(ROOT) not in where and str(fresh_site) in where  # the wheel's copy, not the clone's

    outputs = []
    for argv in readme_main_job():
        done = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"{shlex.join(argv)}: {done.stderr}"
        outputs.append(done.stdout)
    assert "ok" in outputs[0].lower() and outputs[1].startswith("history: 1N")
    refused = subprocess.run(["escalation-rules", "verify", "no-such-protocol"], cwd=work, env=env,
                             capture_output=True, text=True, check=False)
    assert refused.returncode == 2 and "shipped protocols: nct07117175" in refused.stderr
    assert len(refused.stderr.splitlines()) == 1
