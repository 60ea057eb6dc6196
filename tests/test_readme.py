"""The README says what is true: its measured figures are the committed benchmark run's, its code
map names every module, and its commands run, from a folder outside the repository, with the
programs of the venv it names (``.venv/bin/``; here, the venv running these tests).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from benchmarks import readme

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
VENV_BIN = Path(sys.executable).parent
"""Where the README's ``.venv/bin/`` is for this run."""


def fenced(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", README, re.DOTALL)


def commands() -> list[str]:
    """Every command of the README's shell blocks, ``&&`` chains split."""
    lines = [line for block in fenced("bash") for line in block.splitlines()]
    lines += [
        line.removeprefix("$ ")
        for block in fenced("console")
        for line in block.splitlines()
        if line.startswith("$ ")
    ]
    return [
        part.split("  #")[0].strip() for line in lines for part in line.split("&&") if part.strip()
    ]


NOT_RUN = {
    "python3 -m venv .venv": "creates the venv these tests already run in",
    '.venv/bin/pip install -e ".[speech]"': "needs the network; CI (.ci/run) installs",
    '.venv/bin/pip install -e ".[dev]"': "needs the network; CI (.ci/run) installs",
    ".venv/bin/python -m pytest -q": "is this test suite; CI (.ci/run) runs exactly this",
    ".venv/bin/python examples/interruption.py": "run by tests/test_examples.py, from a "
    "folder of its own, with this interpreter",
}
"""The README's commands this module does not run itself, and why."""


def user_env() -> dict[str, str]:
    """A user's shell: no key, no pytest variables; this checkout first on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.pop("TELNYX_API_KEY", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return env


def argv(command: str) -> list[str]:
    """The command with ``.venv/bin/`` pointing at this run's venv."""
    words = shlex.split(command)
    assert words[0].startswith(".venv/bin/"), command
    return [str(VENV_BIN / words[0].removeprefix(".venv/bin/")), *words[1:]]


# --------------------------------------------------------------------------- figures


@pytest.mark.parametrize("name", list(readme.FIGURES))
def test_each_measured_figure_is_the_committed_runs(name):
    figure = readme.FIGURES[name](readme.load())
    assert figure in README, (
        f"README's {name} is not the committed run's; paste from "
        f"`.venv/bin/python -m benchmarks.readme`:\n{figure}"
    )


def test_the_committed_markdown_results_are_the_json_results():
    results = readme.load()
    latest = (ROOT / "benchmarks" / "results" / "latest.md").read_text()
    assert readme.targets_table(results) in latest
    assert readme.context_table(results) in latest


def test_no_figure_of_an_older_run_is_left():
    """The figures of the run before words were timed, which the README quoted for months."""
    for stale in ("0.683 ms", "0.908 ms", "1.373 ms", "about 0.7 ms", "1.4 ms", "at 33% of"):
        assert stale not in README


# --------------------------------------------------------------------------- code map


def test_the_code_map_names_every_module():
    section = README.split("## Where the code lives", 1)[1].split("\n## ", 1)[0]
    package = ROOT / "pipecat_telnyx_tts"
    modules = [p for p in package.rglob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    missing = [str(p.relative_to(package)) for p in modules if f"`{p.name}`" not in section]
    assert not missing, f"README's 'Where the code lives' lacks {missing}"


# --------------------------------------------------------------------------- commands


def test_every_command_uses_the_venv_the_readme_sets_up():
    found = commands()
    assert len(found) >= 8, found
    for command in found:
        if command == "python3 -m venv .venv":
            continue
        assert command.startswith(".venv/bin/"), f"README command without .venv/bin/: {command}"
    # Inline commands in the prose too.
    inline = re.findall(r"`((?:[A-Z_]+=\S+ )?(?:\.venv/bin/)?python3? [^`]*)`", README)
    assert all(".venv/bin/python" in c for c in inline), inline


def test_every_module_an_inline_command_runs_exists():
    for module in re.findall(r"`(?:[A-Z_]+=\S+ )?\.venv/bin/python -m ([\w.]+)", README):
        assert importlib.util.find_spec(module), f"README runs `python -m {module}`: no such module"


def test_the_readmes_install_line_names_this_package_and_its_extras():
    [block] = [b for b in fenced("text") if "@ git+" in b]
    requirement = Requirement(block.strip())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert requirement.name == project["name"]
    assert requirement.extras <= set(project["optional-dependencies"])
    assert requirement.url and requirement.url.startswith("git+https://")


def test_the_demo_prints_what_the_readme_shows(tmp_path):
    [command] = [c for c in commands() if c.endswith("pipecat-telnyx-tts demo")]
    result = subprocess.run(
        argv(command), cwd=tmp_path, env=user_env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    [shown] = [b for b in fenced("text") if "Time to first audio" in b]

    def shape(text: str) -> list[str]:
        masked = re.sub(r"\d+(\.\d+)?", "N", text.replace("demo.wav", "OUT"))
        return [" ".join(line.split()) for line in masked.splitlines() if line.strip()]

    printed = result.stderr + result.stdout
    assert shape(printed) == shape(shown), printed
    assert (tmp_path / "demo.wav").stat().st_size > 0


async def test_the_command_line_sessions_run_as_shown(tmp_path):
    """The console block: the emulator, then voices and say against the URL it printed."""
    [block] = fenced("console")
    session = [c for c in commands() if c in block]
    [serve, *clients] = session
    assert serve.endswith("pipecat-telnyx-tts emulator")
    shown_ws = re.search(r"listening on (ws://\S+)", block)
    assert shown_ws
    emulator = await asyncio.create_subprocess_exec(
        *argv(serve), "--port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        cwd=tmp_path, env=user_env(),
    )  # fmt: skip
    try:
        assert emulator.stdout is not None
        async with asyncio.timeout(30):
            first = (await emulator.stdout.readline()).decode()
        served = re.search(r"listening on (ws://\S+)", first)
        assert served, first
        for client in clients:
            words = argv(client.replace(shown_ws.group(1), served.group(1)))
            result = await asyncio.to_thread(
                subprocess.run, words, cwd=tmp_path, env=user_env(),
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert result.returncode == 0, (client, result.stderr)
        assert (tmp_path / "hello.wav").stat().st_size > 0
    finally:
        emulator.terminate()
        await emulator.wait()


def test_every_command_is_run_or_says_why_not():
    runs_here = {"pipecat-telnyx-tts demo", "pipecat-telnyx-tts emulator"}
    console = fenced("console")[0]
    for command in commands():
        if command in NOT_RUN or command in console:
            continue
        assert any(command.endswith(r) for r in runs_here), f"README command not run: {command}"
    assert set(NOT_RUN) <= set(commands()), set(NOT_RUN) - set(commands())
