"""`pip install .` gives the commands: the wheel is built from a copy of the checkout, installed
into a fresh virtual environment, and its `ssa-*` commands run from a folder outside the checkout.

The environment sees the system's packages (`--system-site-packages`: jax, flax, ... are not
installed again) but its own ssa_jax comes first, which the test checks: `ssa_jax.__file__` is in
the environment, not in a checkout (an editable install of the checkout may be visible below it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = ["--config.data.synthetic.num_speakers=2", "--config.data.synthetic.num_phrases=2",
        "--config.data.synthetic.repetitions=1"]


def _commands() -> dict[str, str]:
  """`ssa-<command>` -> `ssa_jax.cli.<command>:command`, one per bin/<command>.py shim."""
  return {f"ssa-{p.stem.replace('_', '-')}": f"ssa_jax.cli.{p.stem}:command"
          for p in sorted((REPO / "bin").glob("[a-z]*.py"))}


def _run(args: list[str], cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  env.update(JAX_PLATFORMS="cpu", PIP_NO_INPUT="1")
  return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
  """(wheel, venv, folder outside the checkout) after building and installing the wheel."""
  root = tmp_path_factory.mktemp("install")
  src = root / "src"  # a copy: building in the checkout would leave build/ and *.egg-info there
  src.mkdir()
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(REPO / name, src / name)
  for name in ("ssa_jax", "bin", "configs", "tests"):  # bin, configs, tests must stay out
    shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
  p = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
            "--no-cache-dir", "-w", str(root / "dist"), str(src)], cwd=root)
  assert p.returncode == 0, p.stderr
  (wheel,) = (root / "dist").glob("ssa_jax-*.whl")
  venv = root / "venv"  # pip comes from the system's packages: no ensurepip
  p = _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
           cwd=root)
  assert p.returncode == 0, p.stderr
  p = _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
            "--no-cache-dir", str(wheel)], cwd=root)
  assert p.returncode == 0, p.stderr
  elsewhere = root / "elsewhere"
  elsewhere.mkdir()
  return wheel, venv, elsewhere


def test_the_wheel_holds_the_package_configs_and_commands_only(installed):
  wheel, _, _ = installed
  with zipfile.ZipFile(wheel) as z:
    names = z.namelist()
    info = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    entry_points = z.read(info).decode()
  tops = {n.split("/")[0] for n in names}
  assert {t for t in tops if not t.endswith(".dist-info")} == {"ssa_jax"}, sorted(tops)
  for name in ("acrnn", "acrnn_r", "quickstart", "ssa_crnn_r"):
    assert f"ssa_jax/configs/{name}.py" in names
  scripts = [l.split("=") for l in entry_points.split("[console_scripts]")[1].splitlines()
             if "=" in l]
  assert {k.strip(): v.strip() for k, v in scripts} == _commands()
  for target in _commands().values():
    assert target.split(":")[0].replace(".", "/") + ".py" in names


def test_installed_commands_run_outside_the_checkout(installed):
  _, venv, elsewhere = installed
  bindir = venv / "bin"
  assert sorted(p.name for p in bindir.glob("ssa-*")) == sorted(_commands())
  p = _run([str(bindir / "python"), "-c", "import ssa_jax; print(ssa_jax.__file__)"], elsewhere)
  assert p.returncode == 0, p.stderr
  assert Path(p.stdout.strip()).is_relative_to(venv), p.stdout

  p = _run([str(bindir / "ssa-prepare"), "--helpshort"], elsewhere)  # the installed script's flags
  assert "--config:" in p.stdout and "quickstart" in p.stdout, p.stdout + p.stderr

  cache = elsewhere / "cache"  # a packaged config by name, a real command
  p = _run([str(bindir / "ssa-prepare"), "--config", "quickstart", *TINY,
            f"--config.data.cache_dir={cache}"], elsewhere)
  assert p.returncode == 0, p.stderr
  assert "16 utterances, 2 speakers, 0 bad files skipped" in p.stdout, p.stdout
  assert f"feature cache: {cache}" in p.stdout and "(built)" in p.stdout, p.stdout

  p = _run([str(bindir / "ssa-train"), "--config", "nosuch:acrnn", "--fold", "0"], elsewhere)
  lines = [l for l in p.stderr.splitlines() if l.strip()]
  assert p.returncode == 1 and lines == [
      "error: --config nosuch:acrnn: no such config file, nor a packaged config "
      "(acrnn, acrnn_r, quickstart, ssa_crnn_r)"], p.stderr
