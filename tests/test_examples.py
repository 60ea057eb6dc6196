"""What a new user runs first: the phone agent's start-up, the README's test, the examples.

Each runs in a subprocess, as a user would run it, from a temporary folder outside the repository
so that nothing of the repository's own configuration (its pytest settings, a ``.env``) helps.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOT_PATH = ROOT / "examples" / "phone_agent" / "bot.py"
INTERRUPTION_PATH = ROOT / "examples" / "interruption.py"
KEYS = ("TELNYX_API_KEY", "DEEPGRAM_API_KEY", "CARTESIA_API_KEY", "ELEVENLABS_API_KEY")


def run(
    args: list[str], cwd: Path, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    """``args`` with this interpreter, no service keys but ``env``, and pytest's own
    variables removed so the child sees a user's shell rather than this test run."""
    clean = {k: v for k, v in os.environ.items() if k not in KEYS and not k.startswith("PYTEST_")}
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def bot_copy(folder: Path) -> Path:
    """The phone agent alone in ``folder``: a ``.env`` a developer keeps next to the real one
    cannot lend it keys."""
    copy = folder / "bot.py"
    shutil.copy(BOT_PATH, copy)
    return copy


def test_phone_agent_help_needs_no_keys(tmp_path):
    result = run([str(bot_copy(tmp_path)), "--help"], tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: bot.py")
    assert "--transport" in result.stdout


def test_phone_agent_without_keys_names_them(tmp_path):
    result = run([str(bot_copy(tmp_path)), "-t", "telnyx"], tmp_path)

    assert result.returncode != 0
    assert "error: set TELNYX_API_KEY" in result.stderr, "one key for the whole call"


def test_a_key_exported_in_the_shell_wins_over_an_empty_line_of_dot_env(tmp_path):
    # A copied .env.example: empty keys, one filled in.
    (tmp_path / ".env").write_text("TELNYX_API_KEY=\nDEEPGRAM_API_KEY=dg-from-file\n")
    # Run with -c from that folder: pipecat's runner then finds the same .env on import and loads
    # it with override, which must not win either.
    code = f"""
import importlib.util, json, sys
from pathlib import Path
spec = importlib.util.spec_from_file_location("bot", {str(BOT_PATH)!r})
bot = sys.modules["bot"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bot)
bot.load_runner(Path(".env"))
config = bot.AgentConfig.from_env()
print(json.dumps([config.telnyx_api_key, config.deepgram_api_key, config.missing()]))
"""
    result = run(["-c", code], tmp_path, TELNYX_API_KEY="from-shell")

    assert result.returncode == 0, result.stderr
    telnyx, deepgram, missing = json.loads(result.stdout.strip().splitlines()[-1])
    assert (telnyx, deepgram, missing) == ("from-shell", "dg-from-file", [])


def test_the_readmes_pipeline_snippet_builds_the_service(tmp_path):
    """The usage snippet up to its pipeline (whose transport, STT and LLM are the reader's), run
    as a script of its own from a folder outside the repository."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Use it in a pipeline", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "no python block in the README's usage section"
    code = match.group(1).split("\npipeline = ", 1)[0]
    check = "\nprint(type(tts).__name__, tts._settings.voice, tts._settings.speed)\n"
    (tmp_path / "snippet.py").write_text(code + check)
    result = run(["-W", "error::DeprecationWarning:__main__", "snippet.py"], tmp_path,
                 TELNYX_API_KEY="KEY-for-the-snippet")  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["TelnyxTTSService", "Telnyx.NaturalHD.astra", "1.1"]


def readme_test_snippet() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Test your own bot against the emulator", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "no python block in the README's test section"
    return match.group(1)


def test_the_readmes_test_passes_in_a_project_of_its_own(tmp_path):
    project = tmp_path / "my_bot"
    project.mkdir()
    (project / "test_my_bot.py").write_text(readme_test_snippet())
    # pytest-asyncio's default (strict) mode, whatever configuration may lie above tmp_path.
    (project / "pytest.ini").write_text("[pytest]\nasyncio_mode = strict\n")
    result = run(
        ["-m", "pytest", "-q", "-p", "no:cacheprovider", f"--rootdir={project}", "test_my_bot.py"],
        project,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_the_interruption_example_cuts_the_first_reply_cleanly(tmp_path):
    result = run([str(INTERRUPTION_PATH)], tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    cut = re.search(
        r"Turn 1: the caller heard (\d+\.\d+) s, then interrupted \((\d+\.\d+) s of its audio "
        r"had arrived\)",
        out,
    )
    assert cut, out
    heard, delivered = float(cut.group(1)), float(cut.group(2))
    # Heard from first audio to the barge-in, which comes BARGE_IN_AFTER_S (0.5 s) later; never
    # more than had arrived, and audio arrives faster than it plays.
    assert 0.5 <= heard < delivered < 4, out
    second = re.search(r"Turn 2: the caller heard (\d+\.\d+) s, spoken to the end", out)
    assert second and float(second.group(1)) > 1, out
    assert "Force sent to Telnyx for the interrupted turn: yes" in out
    assert "Audio of the interrupted turn after the interruption: 0 frames" in out
    assert "Clean barge-in." in out


DEPRECATED = {
    "PipelineTask": "PipelineWorker (PipelineTask is deprecated since pipecat 1.3)",
    "PipelineRunner": "WorkerRunner (PipelineRunner is deprecated since pipecat 1.3)",
    '"role": "system"': "system_instruction on the LLM service (a system message in the "
    "context is deprecated since pipecat 1.9)",
}


def test_the_readme_and_the_examples_use_no_deprecated_pipecat_api():
    """What a user copies must not greet them with deprecation warnings."""
    texts = {"README.md": (ROOT / "README.md").read_text()}
    for path in sorted((ROOT / "examples").rglob("*")):
        if path.suffix in (".py", ".md"):
            texts[str(path.relative_to(ROOT))] = path.read_text()
    found = [
        f"{name}: {old} -> {new}" for name, text in texts.items() for old, new in DEPRECATED.items()
        if old in text
    ]  # fmt: skip
    assert not found
