"""``nanostream check`` checks the paths nodes read and write, with file:line, changing nothing."""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest

from nanostream_trio import NanoNode
from nanostream_trio._cli import main
from nanostream_trio._config import read_pipeline
from nanostream_trio._setup_check import SetupFinding, check_setup, path_arguments_of
from nanostream_trio.nodes import TailFile

#: The unprivileged account the permission tests run ``nanostream check`` as, when run as root
#: (root reads and writes whatever the permission bits say, so chmod denies it nothing).
UNPRIVILEGED_USER = "nobody"

# The ``nanostream`` command in a child process that gives up root once the interpreter has started:
# the interpreter itself may live where the unprivileged user cannot read (under /root).
CHECK_AS = """\
import os
import sys

from nanostream_trio._cli import main

uid, gid = int(sys.argv[1]), int(sys.argv[2])
if uid >= 0:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    assert os.getuid() == os.geteuid() == uid
sys.exit(main(sys.argv[3:]))
"""


class ScArchive(NanoNode):
    """A custom node declaring its paths: reads ``source``, writes into ``target``."""

    path_arguments: ClassVar[Mapping[str, str]] = {"source": "read_file", "target": "write_dir"}

    def __init__(self, source: str, target: str = "out") -> None:
        super().__init__()
        self.source, self.target = source, target

    def generator(self) -> Iterator[Any]:
        yield self.source


class ScSink(NanoNode):
    def process_item(self, item: Any) -> None:
        return None


def findings_of(tmp_path: Path, pipeline: str) -> tuple[Path, list[SetupFinding]]:
    path = tmp_path / "pipeline.yaml"
    path.write_text(textwrap.dedent(pipeline))
    return path, check_setup(read_pipeline(path))


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """What ``nanostream`` printed on stderr: its errors and warnings, without their prefix."""

    file: Path
    returncode: int
    errors: list[str]
    warnings: list[str]
    other: list[str]  # the other lines (a run's events)


class AsUser:
    """A directory and a way to run ``nanostream`` in it as a user the modes apply to.

    As root: a directory of its own in the temporary directory (pytest's is root's alone),
    owned by ``nobody``, with the check run as ``nobody``. Otherwise: pytest's ``tmp_path``
    and the current user.
    """

    def __init__(self, directory: Path, account: pwd.struct_passwd | None) -> None:
        self.directory = directory
        self.account = account

    def check(self, pipeline: str, modes: Mapping[Path, int]) -> CheckResult:
        """``nanostream check``, which prints nothing on stderr but errors and warnings."""
        result = self.nanostream("check", pipeline, modes)
        assert result.other == []
        return result

    def nanostream(self, command: str, pipeline: str, modes: Mapping[Path, int]) -> CheckResult:
        """Write ``pipeline.yaml``, give the paths their ``modes``, run the command on it."""
        file = self.directory / "pipeline.yaml"
        file.write_text(textwrap.dedent(pipeline))
        uid, gid = -1, -1
        if self.account is not None:
            uid, gid = self.account.pw_uid, self.account.pw_gid
            for path in [self.directory, *self.directory.rglob("*")]:
                os.chown(path, uid, gid)
        for path, mode in modes.items():
            path.chmod(mode)
        try:
            done = subprocess.run(
                [sys.executable, "-c", CHECK_AS, str(uid), str(gid), command, str(file)],
                cwd=self.directory,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        finally:
            for path in modes:
                path.chmod(0o700)  # so that the directory can be removed
        assert done.returncode in (0, 2), done.stderr
        errors, warnings, other = [], [], []
        for line in done.stderr.splitlines():
            if line.startswith("nanostream: error: "):
                errors.append(line.removeprefix("nanostream: error: "))
            elif line.startswith("nanostream: warning: "):
                warnings.append(line.removeprefix("nanostream: warning: "))
            else:
                other.append(line)
        return CheckResult(file, done.returncode, errors, warnings, other)


@pytest.fixture
def as_user(tmp_path: Path) -> Iterator[AsUser]:
    """An :class:`AsUser`; skips as root when no unprivileged account exists."""
    if not (hasattr(os, "geteuid") and os.geteuid() == 0):
        yield AsUser(tmp_path, None)
        return
    try:
        account = pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        pytest.skip(
            f"running as root, which chmod denies nothing, and there is no "
            f"{UNPRIVILEGED_USER!r} account to run the check as"
        )
    directory = Path(tempfile.mkdtemp(prefix="nanostream-permissions-"))
    try:
        yield AsUser(directory, account)
    finally:
        shutil.rmtree(directory)


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in ``tmp_path``: nodes open relative paths from the current directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


class TestMissingPaths:
    def test_watched_directory_missing(self, in_tmp: Path) -> None:
        """A watched directory that does not exist is an error at its value's line."""
        path, findings = findings_of(
            in_tmp,
            """\
            nodes:
              - name: watch
                class: LocalDirectoryWatchdog
                args: {directory: incoming}
              - {name: read, class: LocalFileReader}
              - {name: out, class: ScSink}
            """,
        )
        [finding] = findings
        assert not finding.warning
        assert str(finding.error) == (
            f"{path}:4:23: nodes[0].args.directory: node 'watch' (LocalDirectoryWatchdog) "
            f"argument 'directory': directory 'incoming' (relative to the current directory "
            f"{in_tmp}) does not exist; create it or fix the path"
        )
        (in_tmp / "incoming").mkdir()
        assert check_setup(read_pipeline(path)) == []

    def test_watched_path_is_a_file(self, in_tmp: Path) -> None:
        """A file given where a directory is watched is an error."""
        (in_tmp / "incoming").write_text("")
        _, [finding] = findings_of(
            in_tmp,
            """\
            nodes:
              - {name: watch, class: LocalDirectoryWatchdog, args: {directory: incoming}}
              - {name: out, class: ScSink}
            """,
        )
        assert finding.error.problem.endswith(
            f"'incoming' (relative to the current directory {in_tmp}) is not a directory"
        )

    def test_checkpoint_directory_missing(self, in_tmp: Path) -> None:
        """A checkpoint store in a missing directory is an error; a missing log only a warning."""
        path, findings = findings_of(
            in_tmp,
            """\
            checkpoint:
              path: state/app.db
            nodes:
              - name: tail
                class: TailFile
                args:
                  path: app.log
              - {name: out, class: ScSink}
            """,
        )
        warning, error = findings
        assert warning.warning
        assert not error.warning
        assert str(warning.error).startswith(f"{path}:7:13: nodes[0].args.path: node 'tail'")
        assert "does not exist yet; the node will wait for it" in str(warning.error)
        assert str(error.error) == (
            f"{path}:2:9: checkpoint.path: the checkpoint store: the directory "
            f"'{in_tmp / 'state'}' of file 'state/app.db' does not exist; create it or fix the path"
        )

    def test_missing_file_without_follow_is_an_error(self, in_tmp: Path) -> None:
        """With follow: false TailFile fails on a missing file, so check does too."""
        _, [finding] = findings_of(
            in_tmp,
            """\
            nodes:
              - {name: tail, class: TailFile, args: {path: app.log, follow: false}}
              - {name: out, class: ScSink}
            """,
        )
        assert not finding.warning
        assert "file 'app.log' (relative to the current directory" in finding.error.problem
        assert finding.error.problem.endswith("does not exist; create it or fix the path")

    def test_glob_without_matches_is_a_warning(self, in_tmp: Path) -> None:
        """A glob that matches nothing yet is a warning, not an error."""
        _, [finding] = findings_of(
            in_tmp,
            """\
            nodes:
              - {name: tail, class: TailFile, args: {path: "logs/*.log"}}
              - {name: out, class: ScSink}
            """,
        )
        assert finding.warning
        assert "no file matches 'logs/*.log'" in finding.error.problem

    def test_output_directory_missing(self, in_tmp: Path) -> None:
        """JSONLinesWriter into a directory that does not exist is an error."""
        _, [warning, finding] = findings_of(
            in_tmp,
            """\
            nodes:
              - {name: tail, class: TailFile, args: {path: app.log}}
              - {name: write, class: JSONLinesWriter, args: {path: out/records.jsonl}}
            """,
        )
        assert (warning.warning, finding.warning) == (True, False)
        assert finding.error.line == 3
        assert finding.error.key == "nodes[1].args.path"
        assert f"the directory '{in_tmp / 'out'}' of file 'out/records.jsonl'" in str(finding.error)

    def test_all_is_well(self, in_tmp: Path) -> None:
        """Existing paths give no findings, and checking creates nothing."""
        (in_tmp / "incoming").mkdir()
        (in_tmp / "app.log").write_text("x\n")
        before = tree(in_tmp)
        _, findings = findings_of(
            in_tmp,
            """\
            checkpoint: state.db
            nodes:
              - {name: watch, class: LocalDirectoryWatchdog, args: {directory: incoming}}
              - {name: read, class: LocalFileReader}
              - {name: write, class: JSONLinesWriter, args: {path: records.jsonl}}
              - name: tail
                class: TailFile
                args: {path: app.log}
              - {name: out, class: ScSink}
            links: [[watch, read, write], [tail, out]]
            """,
        )
        assert findings == []
        assert tree(in_tmp) == [*before, "pipeline.yaml"]


class TestDeclarations:
    def test_custom_node_declares_its_paths(self, in_tmp: Path) -> None:
        """A class's path_arguments are checked like the built-ins' declarations."""
        _, findings = findings_of(
            in_tmp,
            """\
            nodes:
              - {name: archive, class: ScArchive, args: {source: data.bin}}
              - {name: out, class: ScSink}
            """,
        )
        assert [f.error.key for f in findings] == ["nodes[0].args.source", "nodes[0]"]
        assert "file 'data.bin'" in findings[0].error.problem
        assert "argument 'target': directory 'out'" in findings[1].error.problem

    def test_builtin_declaration_depends_on_arguments(self) -> None:
        """TailFile's path is read (follow: false) or waited for."""
        assert path_arguments_of(TailFile, {"follow": False}) == {"path": "read_file"}
        assert path_arguments_of(TailFile, {})["path"] == "wait_file"

    def test_unknown_use_is_refused(self) -> None:
        """A declaration naming an unknown use is a TypeError naming the class."""

        class ScBad(NanoNode):
            path_arguments: ClassVar[Mapping[str, str]] = {"source": "reed"}

            def generator(self) -> Iterator[Any]:
                yield 1

        with pytest.raises(TypeError, match=r"ScBad.path_arguments\['source'\] is 'reed'"):
            path_arguments_of(ScBad, {})


COPY_LOG = """\
nodes:
  - {name: tail, class: TailFile, args: {path: app.log, follow: false}}
  - {name: parse, class: JSONLinesParser}
  - {name: write, class: JSONLinesWriter, args: {path: out.jsonl}}
"""


class TestPermissions:
    """Denied permissions, checked by ``nanostream check`` run as a user the bits apply to."""

    def test_unreadable_file(self, as_user: AsUser) -> None:
        """A file TailFile reads but may not is an error at its line, with its mode."""
        log = as_user.directory / "app.log"
        log.write_text("x\n")
        result = as_user.check(
            """\
            nodes:
              - {name: tail, class: TailFile, args: {path: app.log, follow: false}}
              - {name: out, class: PrinterOfThings}
            """,
            modes={log: 0o200},
        )
        assert result.errors == [
            f"{result.file}:2:48: nodes[0].args.path: node 'tail' (TailFile) argument 'path': "
            f"file 'app.log' (relative to the current directory {as_user.directory}) is not "
            "readable by this user (mode --w-------); fix its permissions",
            f"{result.file}: 1 setup problem (see above)",
        ]
        assert result.returncode == 2

    def test_unlistable_directory(self, as_user: AsUser) -> None:
        """A watched directory without read permission is an error at its line."""
        incoming = as_user.directory / "incoming"
        incoming.mkdir()
        result = as_user.check(
            """\
            nodes:
              - {name: watch, class: LocalDirectoryWatchdog, args: {directory: incoming}}
              - {name: out, class: PrinterOfThings}
            """,
            modes={incoming: 0o300},
        )
        assert result.errors[0] == (
            f"{result.file}:2:68: nodes[0].args.directory: node 'watch' (LocalDirectoryWatchdog) "
            f"argument 'directory': directory 'incoming' (relative to the current directory "
            f"{as_user.directory}) cannot be listed by this user (mode d-wx------); the node "
            "needs to read it: fix its permissions"
        )
        assert (len(result.errors), result.returncode) == (2, 2)

    def test_read_only_checkpoint_directory(self, as_user: AsUser) -> None:
        """A checkpoint in a read-only directory cannot be replaced: an error at checkpoint:."""
        state = as_user.directory / "state"
        state.mkdir()
        result = as_user.check(
            """\
            checkpoint: state/ck.db
            nodes:
              - {name: tail, class: TailFile, args: {path: app.log}}
              - {name: out, class: PrinterOfThings}
            """,
            modes={state: 0o500},
        )
        assert result.errors[0] == (
            f"{result.file}:1:13: checkpoint: the checkpoint store: the directory '{state}' of "
            "file 'state/ck.db' is not writable by this user (mode dr-x------), the file is "
            "replaced through a new file there; fix its permissions"
        )
        assert (len(result.errors), result.returncode) == (2, 2)
        assert result.warnings[0].startswith(f"{result.file}:3:48: nodes[0].args.path:")

    def test_read_only_output_file(self, as_user: AsUser) -> None:
        """An existing output file without write permission is an error at its line."""
        records = as_user.directory / "records.jsonl"
        records.write_text("")
        result = as_user.check(
            """\
            nodes:
              - {name: tail, class: TailFile, args: {path: "*.jsonl"}}
              - {name: write, class: JSONLinesWriter, args: {path: records.jsonl}}
            """,
            modes={records: 0o400},
        )
        assert result.errors[0] == (
            f"{result.file}:3:56: nodes[1].args.path: node 'write' (JSONLinesWriter) argument "
            f"'path': file 'records.jsonl' (relative to the current directory "
            f"{as_user.directory}) is not writable by this user (mode -r--------); fix its "
            "permissions"
        )
        assert (len(result.errors), result.returncode) == (2, 2)

    def test_run_refuses_to_start(self, as_user: AsUser) -> None:
        """nanostream run gives check's located error, exits 2 and writes nothing."""
        log = as_user.directory / "app.log"
        log.write_text('{"n": 1}\n')
        result = as_user.nanostream("run", COPY_LOG, modes={log: 0o200})
        assert result.errors == [
            f"{result.file}:2:48: nodes[0].args.path: node 'tail' (TailFile) argument 'path': "
            f"file 'app.log' (relative to the current directory {as_user.directory}) is not "
            "readable by this user (mode --w-------); fix its permissions",
        ]
        assert result.returncode == 2
        assert not (as_user.directory / "out.jsonl").exists()

    def test_run_reads_what_the_user_may(self, as_user: AsUser) -> None:
        """With read permission the run copies the file, and what it creates is that user's."""
        log = as_user.directory / "app.log"
        log.write_text('{"n": 1}\n{"n": 2}\n')
        result = as_user.nanostream("run", COPY_LOG, modes={log: 0o400})
        assert (result.errors, result.returncode) == ([], 0)
        out = as_user.directory / "out.jsonl"
        assert [json.loads(line) for line in out.read_text().splitlines()] == [{"n": 1}, {"n": 2}]
        assert out.stat().st_uid == (as_user.account.pw_uid if as_user.account else os.getuid())

    def test_the_same_files_with_permissions_pass(self, as_user: AsUser) -> None:
        """The user the checks run as may read what its modes allow: no error, exit 0."""
        (as_user.directory / "app.log").write_text("x\n")
        (as_user.directory / "incoming").mkdir()
        result = as_user.check(
            """\
            nodes:
              - {name: tail, class: TailFile, args: {path: app.log, follow: false}}
              - {name: watch, class: LocalDirectoryWatchdog, args: {directory: incoming}}
              - {name: out, class: PrinterOfThings}
            links: [[tail, out], [watch, out]]
            """,
            modes={as_user.directory / "app.log": 0o400, as_user.directory / "incoming": 0o500},
        )
        assert (result.errors, result.warnings, result.returncode) == ([], [], 0)


class TestCommand:
    def test_problems_exit_2_with_every_finding(
        self, in_tmp: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """check prints each finding on stderr, located, and exits 2 on any error."""
        path = in_tmp / "pipeline.yaml"
        path.write_text(
            textwrap.dedent(
                """\
                checkpoint: s/ck
                nodes:
                  - {name: tail, class: TailFile, args: {path: app.log}}
                  - {name: write, class: JSONLinesWriter, args: {path: out/r.jsonl}}
                """
            )
        )
        assert main(["check", str(path)]) == 2
        err = capsys.readouterr().err.splitlines()
        assert err[0].startswith(f"nanostream: warning: {path}:3:48: nodes[0].args.path:")
        assert err[1].startswith(f"nanostream: error: {path}:4:56: nodes[1].args.path:")
        assert err[2].startswith(f"nanostream: error: {path}:1:13: checkpoint: the checkpoint")
        assert err[3] == f"nanostream: error: {path}: 2 setup problems (see above)"

    def test_warnings_only_exit_0(self, in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A file the node will wait for is a warning: check still says ok."""
        path = in_tmp / "pipeline.yaml"
        path.write_text(
            "nodes:\n  - {name: tail, class: TailFile, args: {path: app.log}}\n"
            "  - {name: out, class: ScSink}\n"
        )
        assert main(["check", str(path)]) == 0
        captured = capsys.readouterr()
        assert captured.out.endswith("sources: tail (1 warning)\n")
        assert captured.err.startswith("nanostream: warning: ")
