"""Directories seqbench must write and cannot: one line naming the key or flag, the path
and the reason, exit 2, before any training starts (they were tracebacks, exit 1).

"Not a directory" (a path under a regular file) works everywhere. "Permission denied"
needs a process that the permission bits bind: CI runs as root, so the command runs
with the capability to override them dropped (setpriv, util-linux). "Read-only file
system" needs a read-only mount: a private mount namespace (unshare) bind-mounts one.
Each is skipped, with its reason, where the machine cannot set it up."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from seqbench.cli import main
from seqbench.rundir import unwritable
from tests.conftest import TINY


@pytest.fixture
def a_file(tmp_path):
    f = tmp_path / "plain.txt"
    f.write_text("a file, not a directory\n")
    return f


def _runs(tmp_path) -> Path:
    """A runs directory holding one finished run, for `report`."""
    runs = tmp_path / "runs"
    assert main(["train", *TINY, "trainer.max_steps=2", f"hydra.run.dir={runs / 'r0'}"]) == 0
    return runs


@pytest.mark.parametrize("command, key", [
    (["train", *TINY, "hydra.run.dir=FILE/x"], "hydra.run.dir"),
    (["sweep", "demo", "hydra.sweep.dir=FILE/x"], "hydra.sweep.dir"),
])
def test_a_run_or_sweep_directory_under_a_file(command, key, a_file, capsys, tmp_path,
                                               monkeypatch):
    monkeypatch.chdir(tmp_path)
    command = [c.replace("FILE", str(a_file)) for c in command]
    assert main(command) == 2
    assert capsys.readouterr().err == (
        f"seqbench: error: {key}={a_file}/x: cannot be written: {a_file} is a file, "
        "not a directory\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.txt"]  # nothing made


def test_a_report_out_under_a_file(a_file, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = _runs(tmp_path)
    capsys.readouterr()
    assert main(["report", str(runs), "--out", f"{a_file}/x"]) == 2
    assert capsys.readouterr().err == (
        f"seqbench: error: --out={a_file}/x: cannot be written: {a_file} is a file, "
        "not a directory\n")


def test_a_data_cache_under_a_file(a_file, capsys, monkeypatch):
    monkeypatch.setenv("SEQBENCH_DATA", f"{a_file}/cache")
    assert main(["data", "fetch", "text8"]) == 2
    assert capsys.readouterr().err == (
        f"seqbench data: error: $SEQBENCH_DATA={a_file}/cache: cannot be written: "
        f"{a_file} is a file, not a directory\n")


def test_a_directory_under_proc_is_refused():
    """/proc exists and is a directory, root passes every access check, yet no directory
    can be made there: the check asks the file system."""
    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc on this machine")
    assert unwritable("/proc/x/y") == ("cannot create a directory in /proc (this file "
                                       "system does not allow new directories)")
    assert unwritable(Path.cwd()) is None


def _cli(args, cwd, prefix=()):
    env = {**os.environ}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([*prefix, sys.executable, "-m", "seqbench", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


def _can(prefix, tmp_path) -> bool:
    try:
        return subprocess.run([*prefix, "true"], cwd=tmp_path, capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def test_no_permission(tmp_path):
    prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    if os.geteuid() != 0:
        prefix = []  # the bits already bind this user
    elif shutil.which("setpriv") is None or not _can(prefix, tmp_path):
        pytest.skip("root, and setpriv cannot drop CAP_DAC_OVERRIDE here")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    runs = _runs(tmp_path)
    for args, key in ((["train", *TINY, f"hydra.run.dir={locked}/run"], "hydra.run.dir"),
                      (["report", str(runs), "--out", f"{locked}/rep"], "--out")):
        out = _cli(args, tmp_path, prefix)
        assert out.returncode == 2, out.stderr
        assert out.stderr.splitlines()[-1] == (
            f"seqbench: error: {key}={locked}/{args[-1].rsplit('/', 1)[1]}: cannot be "
            f"written: cannot create a directory in {locked} (Permission denied)")
        assert len(out.stderr.strip().splitlines()) == 1
    assert list(locked.iterdir()) == []


def test_a_read_only_file_system(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    wrap = ["unshare", "-m", "sh", "-c",
            f"mount --bind {ro} {ro} && mount -o remount,bind,ro {ro} && exec \"$@\"", "sh"]
    if shutil.which("unshare") is None or not _can(wrap, tmp_path):
        pytest.skip("no private mount namespace with a read-only bind mount here")
    out = _cli(["sweep", "demo", f"hydra.sweep.dir={ro}/sweep"], tmp_path, wrap)
    assert out.returncode == 2, out.stderr
    assert out.stderr == (f"seqbench: error: hydra.sweep.dir={ro}/sweep: cannot be written: "
                          f"cannot create a directory in {ro} (Read-only file system)\n")
