"""An installed wheel carries conf/ and the corpus: `seqbench train` runs from anywhere."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import TINY

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_built_wheel_trains_from_any_directory(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist),
                    str(REPO)], check=True, timeout=600)
    wheel = next(dist.glob("seqbench-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "seqbench/conf/train.yaml" in names
    assert "seqbench/conf/clip/norm.yaml" in names
    assert "seqbench/data/bundled/tinyshakespeare.txt.gz" in names
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(site), str(wheel)], check=True, timeout=600)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run(
        [sys.executable, "-c", "import seqbench.config as c; print(c.__file__, c.conf_dir())"],
        cwd=work, env=env, capture_output=True, text=True, check=True,
    ).stdout.split()
    assert all(p.startswith(str(site)) for p in where)  # the wheel, not the checkout
    out = subprocess.run([sys.executable, "-m", "seqbench", "train", *TINY, "hydra.run.dir=r"],
                         cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads((work / "r" / "summary.json").read_text())["status"] == "completed"
