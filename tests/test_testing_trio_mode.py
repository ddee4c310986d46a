"""Async tests in a fresh project: the plugin hands those using its fixtures to pytest-trio."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# A user's first async tests, as docs/testing.md shows them: no conftest.py, no pytest settings.
USING_FIXTURES = """\
import trio

from nanostream_testing import CollectingSink, FakeSource, run_pipeline_async


async def test_sleeps_an_hour_in_no_time(nanostream_clock):
    await trio.sleep(3600)
    assert trio.current_time() == 3600


async def test_pipeline_on_the_fake_clock(nanostream_clock):
    sink = CollectingSink()
    await run_pipeline_async(FakeSource([1, 2], interval=60) > sink)
    assert sink.arrivals == [0.0, 60.0]


async def test_runner_fixture(nanostream_clock, nanostream_runner):
    sink = CollectingSink()
    await nanostream_runner.run_async(FakeSource([1], start=30) > sink)
    assert sink.arrivals == [30.0]


def test_sync_tests_still_plain(nanostream_runner):
    sink = CollectingSink()
    nanostream_runner.run(FakeSource([1]) > sink)
    assert sink.items == [1]
"""

PLAIN_ASYNC = """\
import trio


async def test_without_the_fixtures():
    await trio.sleep(0)
"""


def pytest_in(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m pytest`` in ``project`` with this interpreter, as a user would run it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    command += ["-p", "no:randomly", *args]
    return subprocess.run(
        command, cwd=project, env=env, capture_output=True, text=True, timeout=120, check=False
    )


class TestFreshProject:
    def test_async_tests_using_the_fixtures_need_no_configuration(self, tmp_path: Path) -> None:
        """A conftest-less project's async tests that request the fixtures run and pass."""
        (tmp_path / "test_readings.py").write_text(USING_FIXTURES)
        result = pytest_in(tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "4 passed" in result.stdout

    def test_other_async_tests_need_the_documented_line(self, tmp_path: Path) -> None:
        """An async test without the fixtures fails as pytest says, until trio_mode is on."""
        (tmp_path / "test_plain.py").write_text(PLAIN_ASYNC)
        before = pytest_in(tmp_path)
        assert before.returncode != 0
        assert "async def functions are not natively supported" in before.stdout + before.stderr
        # The one line docs/testing.md gives, as written there:
        (tmp_path / "pyproject.toml").write_text(
            textwrap.dedent(
                """\
                [tool.pytest.ini_options]
                trio_mode = true
                """
            )
        )
        after = pytest_in(tmp_path)
        assert after.returncode == 0, after.stdout + after.stderr
        assert "1 passed" in after.stdout

    def test_without_pytest_trio_the_failure_says_what_to_install(self, tmp_path: Path) -> None:
        """With pytest-trio disabled, an async test using the fixtures fails naming the fix."""
        (tmp_path / "test_readings.py").write_text(USING_FIXTURES)
        result = pytest_in(tmp_path, "-p", "no:trio")
        assert result.returncode == 1
        assert "1 passed, 3 errors" in result.stdout
        assert (
            "test_readings.py::test_sleeps_an_hour_in_no_time is an async test using "
            "nanostream_testing's fixtures, which runs under pytest-trio, and pytest-trio is "
            "not installed (or disabled with -p no:trio): pip install 'nanostream-trio[test]'"
        ) in result.stdout


# The user's own tests next to the page's: async ones without the fixtures (they need the
# page's trio_mode line) and two that fail on purpose, so that passing proves nothing was
# skipped and failing proves the tests really ran (on the fake clock, for the second).
OWN_TESTS = """\
import trio


async def test_plain_async_runs():
    await trio.sleep(0)


async def test_plain_async_fails_on_purpose():
    await trio.sleep(0)
    assert "ran" == "did not run"


async def test_fake_clock_fails_on_purpose(nanostream_clock):
    await trio.sleep(60)
    assert trio.current_time() == 61
"""


def page_blocks(language: str) -> list[str]:
    """docs/testing.md's fenced blocks in ``language``, in order."""
    page = (ROOT / "docs" / "testing.md").read_text()
    pattern = rf"^```{language}\n(.*?)^```"
    return re.findall(pattern, page, flags=re.DOTALL | re.MULTILINE)


class TestTheDocumentedProject:
    """A fresh project set up exactly as docs/testing.md says, run as its user would run it.

    Twice: with this test run's interpreter (where .ci/run installed the package with
    ``-e '.[dev]'``), and in a virtual environment of its own made for the test, where the
    package is installed as the page says, ``pip install 'nanostream-trio[test]'`` (from this
    checkout, not as an editable install), so the plugin, pytest and pytest-trio all come
    from that one install through their entry points.
    """

    def test_the_page_as_a_project_of_its_own(self, tmp_path: Path) -> None:
        """The page's examples and its one configuration line: all pass, the bad ones fail."""
        self.check_project(tmp_path, sys.executable, os.environ.get("PYTHONPATH"))

    def test_the_page_in_a_fresh_virtual_environment(self, tmp_path: Path) -> None:
        """The same project in a new venv with only ``pip install '<package>[test]'`` in it."""
        venv = tmp_path / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        python = str(venv / "bin" / "python")
        # The user's environment, without anything pointing at this checkout or its venv.
        env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
        install = subprocess.run(
            [python, "-m", "pip", "install", "--quiet", f"{ROOT}[test]"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert install.returncode == 0, install.stdout + install.stderr
        code = "import nanostream_testing, pytest_trio; print(nanostream_testing.__file__)"
        where = subprocess.run(
            [python, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=60, check=True,
        )  # fmt: skip
        assert where.stdout.startswith(str(venv)), where.stdout  # installed, not this checkout
        self.check_project(tmp_path, python, None)

    def check_project(self, tmp_path: Path, python: str, pythonpath: str | None) -> None:
        [configuration] = page_blocks("toml")
        examples = page_blocks("python")
        expected = sum(len(re.findall(r"^(?:async )?def test_", b, re.MULTILINE)) for b in examples)
        assert expected >= 15
        project = tmp_path / "project"
        (project / "tests").mkdir(parents=True)
        (project / "pyproject.toml").write_text(configuration)
        (project / "tests" / "test_from_the_docs.py").write_text("\n\n".join(examples))
        (project / "tests" / "test_mine.py").write_text(OWN_TESTS)
        # Nothing of this run's environment but where programs and (in a checkout that is
        # not installed) this package are found.
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
        if pythonpath:
            env["PYTHONPATH"] = pythonpath
        command = [python, "-m", "pytest", "-p", "no:cacheprovider"]
        command += ["--rootdir", str(project), "-c", str(project / "pyproject.toml")]
        result = subprocess.run(
            command, cwd=project, env=env, capture_output=True, text=True, timeout=120
        )
        output = result.stdout + result.stderr
        assert result.returncode == 1, output
        assert "configfile: pyproject.toml" in result.stdout, output
        assert f"2 failed, {expected + 1} passed" in result.stdout, output
        failed = sorted(re.findall(r"^FAILED (\S+)", result.stdout, re.MULTILINE))
        assert failed == [
            "tests/test_mine.py::test_fake_clock_fails_on_purpose",
            "tests/test_mine.py::test_plain_async_fails_on_purpose",
        ], output
        assert "assert 60.0 == 61" in result.stdout, output


class TestPackaging:
    def test_test_extra_installs_pytest_trio(self) -> None:
        """pip install 'nanostream-trio[test]' brings pytest and pytest-trio."""
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        extra = project["optional-dependencies"]["test"]
        names = {requirement.split(">")[0].split("=")[0].strip() for requirement in extra}
        assert {"pytest", "pytest-trio"} <= names

    def test_docs_no_longer_claim_nothing_to_configure(self) -> None:
        """docs/testing.md gives the install line and the trio_mode line for other async tests."""
        page = (ROOT / "docs" / "testing.md").read_text()
        assert "Nothing to configure" not in page
        assert "pip install 'nanostream-trio[test]'" in page
        assert "trio_mode = true" in page
