"""benchmarks/device_check.sh, in pieces (a QUICK=1 run took 353 s on the shared 2-core machine, too
long for the suite; run it as `QUICK=1 OUT=/tmp/dc bash benchmarks/device_check.sh`): it parses,
its wheel list covers the project's requirements at the versions tested here, a bad subcommand is
a usage error, and with no budget left every part is skipped, said so, and saved under $OUT. The
parts themselves are tested where they live (benchmarks.step: test_benchmarks.py; bin.train:
test_cli.py)."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "device_check.sh")
# what the accelerator machine has (issue 23): these and their own requirements (numpy, scipy)
ON_THE_MACHINE = {"jax", "flax", "optax", "orbax-checkpoint", "chex", "numpy", "scipy", "torch"}


def _run(*args, env=None, timeout=120):
  return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, cwd=ROOT,
                        env={**os.environ, **(env or {})}, timeout=timeout, check=False)


def _norm(name: str) -> str:
  return re.sub(r"[-_.]+", "-", name).lower()


def test_script_parses_and_rejects_a_bad_subcommand():
  assert subprocess.run(["bash", "-n", SCRIPT], check=False).returncode == 0
  done = _run("bogus")
  assert done.returncode == 2 and "usage:" in done.stderr


def test_wheel_list_covers_the_requirements_at_the_tested_versions():
  done = _run("list")
  assert done.returncode == 0
  pins = dict(line.split("==") for line in done.stdout.split())
  pins = {_norm(k): v for k, v in pins.items()}
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    deps = tomllib.load(f)["project"]["dependencies"]
  names = {_norm(re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0]) for d in deps}
  assert names - {_norm(n) for n in ON_THE_MACHINE} <= set(pins), "a requirement has no wheel"
  assert "setuptools" in pins  # the build backend of `pip install --no-deps -e .`
  for name, version in pins.items():  # the versions the project is tested with here
    try:
      installed = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      continue
    assert installed == version, f"{name}: pinned {version}, tested with {installed}"


def test_no_budget_skips_every_part_and_saves_the_log(tmp_path):
  done = _run(env={"QUICK": "1", "BUDGET": "0", "OUT": str(tmp_path)})
  assert done.returncode == 1  # nothing ran: not a pass
  timings = (tmp_path / "timings.txt").read_text()
  for part in ("00_env", "01_install", "02_step", "03_parallel", "04_fold"):
    assert f"== {part}: skipped, the budget of 0 s is spent" in timings
  log = (tmp_path / "device_check.log").read_text()
  assert f"device check: output in {tmp_path} (QUICK=1, budget 0 s)" in log
  assert "status 1" in log and log.strip() == done.stdout.strip()


def test_missing_modules_maps_every_requirement_to_its_module():
  """Here every requirement is installed: the install step's check must find each one's module
  (a wrong name mapping, e.g. scikit-learn -> sklearn, would report it missing)."""
  done = subprocess.run(
      ["bash", "-c", 'source <(sed -n "/^missing_modules() {/,/^}/p" "$0"); missing_modules',
       SCRIPT], capture_output=True, text=True, cwd=ROOT, check=False,
      env={**os.environ, "PY": sys.executable}, timeout=60)
  assert done.returncode == 0, done.stderr
  assert done.stdout.strip() == ""
