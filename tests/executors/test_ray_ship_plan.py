"""``executors.ray_ship`` without a cluster: what is shipped (never an installed model or
module), and an actor's side (a node's own matching copy is used in place; a missing path too
large to ship is one line naming its size, the limit and the fix). The shipping itself, across
two nodes, is ``tests/cluster/test_ray_ship.py``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from parainfer.executors.ray_ship import (ShipError, ShippedPath, check_modules, local_paths, module_sources, receive,
                                          tree, tree_digest)
from parainfer.models.python_callable import CallablePredictor
from parainfer.models.registry import build_predictor
from parainfer.models.sklearn_model import SklearnPredictor


def test_built_in_models_and_installed_modules_are_never_shipped() -> None:
    for task in ("classify", "embed"):
        predictor = build_predictor(task)
        assert predictor.local_paths(), task  # it names its files ...
        assert local_paths(predictor) == [], task  # ... but they are installed on every node
    assert module_sources(CallablePredictor("parainfer.testing:echo")) == []
    assert module_sources(CallablePredictor("json:dumps")) == []  # the standard library


def test_a_module_of_the_working_folder_is_shipped_with_its_imported_neighbours(tmp_path: Path,
                                                                                  monkeypatch) -> None:
    (tmp_path / "shipmod_a.py").write_text("import shipmod_b\n\ndef f(texts):\n    return texts\n")
    (tmp_path / "shipmod_b.py").write_text("X = 1\n")
    (tmp_path / "shipmod_c.py").write_text("X = 2\n")  # never imported: not shipped
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        sources = module_sources(CallablePredictor("shipmod_a:f"))
    finally:
        for name in ("shipmod_a", "shipmod_b"):
            sys.modules.pop(name, None)
    assert sorted(Path(s).name for s in sources) == ["shipmod_a.py", "shipmod_b.py"]
    assert check_modules(sources) == sum(Path(s).stat().st_size for s in sources)


def test_a_relative_model_path_is_made_absolute_and_a_matching_copy_is_used_in_place(tmp_path: Path,
                                                                                       monkeypatch) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.skops").write_bytes(b"weights")
    monkeypatch.chdir(tmp_path)
    predictor = SklearnPredictor("m/model.skops")
    assert local_paths(predictor) == [tmp_path.resolve() / "m" / "model.skops"]
    assert predictor.model_path == tmp_path.resolve() / "m" / "model.skops"  # an actor's cwd is not ours
    item = ShippedPath(str(predictor.model_path), tree(predictor.model_path))
    item.digest = tree_digest(item.path, item.files)
    assert receive(predictor, [item], "10.0.0.2") == []  # present with the same bytes: nothing fetched


def test_a_missing_path_over_the_limit_is_one_line_naming_size_limit_and_fix(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PARAINFER_SHIP_LIMIT_MB", "0.5")
    item = ShippedPath(str(tmp_path / "gone"), [("weights.bin", 3 * 2**20)])  # not shipped: over the limit
    with pytest.raises(ShipError) as e:
        receive(SklearnPredictor(tmp_path / "gone" / "weights.bin"), [item], "10.0.0.2")
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"node 10.0.0.2 does not have {tmp_path}/gone (3.0 MiB")
    assert "over the 0.5 MiB that parainfer sends to Ray nodes (PARAINFER_SHIP_LIMIT_MB): put it on storage" in message
