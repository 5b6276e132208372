"""ssa_jax/rundir.py: a trained run folder as one type; the only builder of the fold<K> name."""

from __future__ import annotations

import ast
import json
import os
import pathlib

import pytest

from ssa_jax import rundir

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _write(path, doc):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(doc, f)


def test_fold_names_and_paths(tmp_path):
  assert rundir.fold_name(3) == "fold3" and rundir.parse_fold_name("fold12") == 12
  assert rundir.parse_fold_name("folder") is None and rundir.parse_fold_name("fold") is None
  fd = rundir.FoldDir.of(str(tmp_path), 7)
  assert fd.path == str(tmp_path / "fold7")
  assert fd.config_path == str(tmp_path / "fold7" / "config.json")
  assert fd.result_path.endswith("fold7/result.json")
  assert fd.metrics_path.endswith("fold7/metrics.jsonl")
  assert fd.checkpoints_path.endswith("fold7/checkpoints")
  assert fd.number == 7  # from the name, no result.json yet
  _write(fd.result_path, {"fold": 2})
  assert fd.number == 2  # result.json's word wins
  with pytest.raises(ValueError, match="cannot tell the fold number"):
    rundir.FoldDir(str(tmp_path)).number


def test_run_folder_lists_folds_with_results_in_numeric_order(tmp_path):
  for k in (10, 2, 0):
    _write(str(tmp_path / f"fold{k}" / "result.json"), {"fold": k, "uar": k / 10})
  (tmp_path / "fold5").mkdir()  # no result.json: not a finished fold
  (tmp_path / "foldx").mkdir()
  run = rundir.RunDir(str(tmp_path))
  assert run.folds() == [0, 2, 10] and run.folds(with_result=False) == [0, 2, 5, 10]
  assert list(run.results()) == [0, 2, 10] and run.results()[10]["uar"] == 1.0
  with pytest.raises(ValueError, match="no such run folder"):
    rundir.RunDir(str(tmp_path / "missing")).results()
  with pytest.raises(ValueError, match="no fold"):
    rundir.RunDir(str(tmp_path / "fold5")).results()


def test_config_errors_are_one_line_and_name_a_fold_of_a_run_folder(tmp_path):
  _write(str(tmp_path / "fold4" / "config.json"), {"name": "x"})
  with pytest.raises(ValueError) as e:
    rundir.FoldDir(str(tmp_path)).config()
  msg = str(e.value)
  assert "\n" not in msg and "no config.json" in msg and str(tmp_path / "fold4") in msg
  (tmp_path / "bad").mkdir()
  (tmp_path / "bad" / "config.json").write_text("{", encoding="utf-8")
  with pytest.raises(ValueError, match="not a valid config file"):
    rundir.FoldDir(str(tmp_path / "bad")).config()


def test_config_of_an_older_run_fills_the_fields_it_predates(tmp_path):
  """A config.json from before model.logit_scale / classifier_bias existed: the temperature
  those runs had (1), today's default for the rest; stored values are kept as they are."""
  from ssa_jax import config as config_lib
  stored = config_lib.base_config().to_dict()
  for key in ("logit_scale", "logit_scale_init", "classifier_bias", "conv_impl", "ssa"):
    del stored["model"][key]
  stored["model"]["embed_dim"] = 16
  _write(str(tmp_path / "fold0" / "config.json"), stored)
  cfg = rundir.FoldDir.of(str(tmp_path), 0).config()
  assert cfg.model.logit_scale == 1.0 and cfg.model.logit_scale_init == "auto"
  assert cfg.model.classifier_bias == "scaled" and cfg.model.ssa == "full"
  assert cfg.model.embed_dim == 16


def _fold_name_builders(source: str) -> list[int]:
  """Lines of `source` that build (f"fold{k}") or parse (.startswith("fold")) a fold<K> name."""
  lines = []
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant) \
        and str(node.values[0].value).endswith("fold") and len(node.values) > 1:
      lines.append(node.lineno)
    if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "startswith" and any(
        isinstance(a, ast.Constant) and a.value == "fold" for a in node.args):
      lines.append(node.lineno)
  return sorted(lines)


def test_the_fold_name_is_built_and_parsed_only_here():
  assert _fold_name_builders('d = os.path.join(w, f"fold{k}")\nok = n.startswith("fold")') == [1, 2]
  found = {str(p.relative_to(ROOT)): _fold_name_builders(p.read_text(encoding="utf-8"))
           for d in ("ssa_jax", "bin") for p in sorted((ROOT / d).rglob("*.py"))}
  assert {p: lines for p, lines in found.items() if lines} == {}


def _print_lines(tree: ast.AST) -> list[int]:
  return sorted(n.lineno for n in ast.walk(tree)
                if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "print")


def test_the_library_never_prints():
  """Only the commands print (ssa_jax/cli/, and the light runtime's own command, `main` of
  ssa_jax/serving.py); the library logs (STYLE.md)."""
  assert _print_lines(ast.parse("def main():\n  print(1)\nprint(2)")) == [2, 3]
  printing = []
  for p in sorted((ROOT / "ssa_jax").rglob("*.py")):
    rel = p.relative_to(ROOT)
    if rel.parts[:2] == ("ssa_jax", "cli"):
      continue
    tree = ast.parse(p.read_text(encoding="utf-8"))
    allowed = set()
    if rel.as_posix() == "ssa_jax/serving.py":
      allowed = {line for node in tree.body if isinstance(node, ast.FunctionDef)
                 and node.name == "main" for line in _print_lines(node)}
      assert allowed, "serving.main prints its results"
    printing += [f"{rel}:{line}" for line in _print_lines(tree) if line not in allowed]
  assert printing == []
