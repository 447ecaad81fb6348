"""``cluster.exits``: what a refusal prints and the exit code it means, for every process."""

from __future__ import annotations

import io

import pytest

from cluster import exits
from cluster.errors import CheckpointError, ClusterError, ConfigError, StartRefused


@pytest.mark.parametrize(("error", "code", "line"), [
    (ConfigError("c.ini [cluster] workers: expected a number"), 2,
     "bspump-cluster: config error: c.ini [cluster] workers: expected a number"),
    (StartRefused("out is locked by pid 42"), 5, "bspump-cluster: not started: out is locked "
                                                 "by pid 42"),
    (CheckpointError("manifest 3 is torn"), 1, "bspump-cluster: manifest 3 is torn"),
    (ClusterError("nothing answers"), 1, "bspump-cluster: nothing answers"),
])
def test_a_refusal_prints_one_line_and_means_its_exit_code(error: ClusterError, code: int,
                                                           line: str) -> None:
    out = io.StringIO()
    assert exits.report_error(error, out) == code
    assert out.getvalue() == line + "\n"
    assert exits.outcome(code) == {2: "broken config", 5: "refused at start", 1: "failed"}[code]
