"""Matrix and PersistentMatrix: indexing, registration, loading, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import bspump
import bspump.analyzer
import bspump.anomaly
import bspump.kafka
import bspump.matrix
from cluster.config import Config
from cluster.errors import ConfigError
from tests.test_bspump.api_helpers import (
    spec_examples,
)


def test_matrix_indexing() -> None:
    app = bspump.Application()
    m = bspump.matrix.Matrix(app, "M", (3, 4))
    m[1, 2] += 1
    m[1, 2] += 1
    m[0, 3] += 5
    m[2] = 7
    expected = np.zeros((3, 4))
    expected[1, 2], expected[0, 3], expected[2, :] = 2, 5, 7
    np.testing.assert_array_equal(m.array, expected)
    assert m[1, 2] == 2
    assert m.shape == (3, 4) and len(m) == 3 and m.dtype == np.float64
    assert app.Matrices["M"] is m
    with pytest.raises(ConfigError, match="'M'"):
        bspump.matrix.Matrix(app, "M", (1,))


def test_persistent_matrix_loads_the_configured_npy(tmp_path: Path) -> None:
    saved = np.zeros((1000, 1000))
    saved[3, 4] = 12.5
    saved[999, 0] = -1
    path = tmp_path / "matrix.npy"
    np.save(path, saved)
    cfg = Config.from_string(f"[matrix:PersistentMatrix]\npath = {path}\n")
    app = bspump.Application(cfg)
    pipeline = bspump.Pipeline(app, "P")
    analyzer = spec_examples.PersistentAnalyzer(app, pipeline)
    assert analyzer.matrix.path == path  # the config beats path="/data/matrix.dat"
    np.testing.assert_array_equal(analyzer.matrix.array, saved)


def test_persistent_matrix_refuses_a_wrong_shape_and_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "small.npy"
    np.save(path, np.ones((2, 2)))
    app = bspump.Application(Config.from_string(f"[matrix:PM]\npath = {path}\n"))
    with pytest.raises(ConfigError, match="shape"):
        bspump.matrix.PersistentMatrix(app, "PM", shape=(3, 3))
    app = bspump.Application(Config.from_string(f"[matrix:PM]\npath = {path}\nsize = 3\n"))
    with pytest.raises(ConfigError, match=r"\[matrix:PM\] size"):
        bspump.matrix.PersistentMatrix(app, "PM", shape=(2, 2))
