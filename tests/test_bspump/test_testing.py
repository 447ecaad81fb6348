"""bspump.testing: the in-memory source and sink, and run_pipeline's results and refusals."""

from __future__ import annotations

import asyncio

import pytest

import bspump
from bspump.testing import PipelineResult, RunFailed, TestingSink, TestingSource, run_pipeline
from cluster.errors import ConfigError
from tests.test_bspump.testing_pipelines import EVENTS, T0, InMemoryPipeline


def test_the_source_yields_its_events_in_batches_and_resumes_after_a_position() -> None:
    app = bspump.Application()
    pipeline = bspump.Pipeline(app, "P")
    events = [{"n": i} for i in range(5)]
    source = TestingSource(app, pipeline, events, config={"batch": 2})

    async def read() -> list[tuple[list[object], object]]:
        return [(b.records, b.position) async for b in source.batches()]

    assert asyncio.run(read()) == [(events[0:2], 2), (events[2:4], 4), (events[4:], 5)]
    source.seek(4)
    assert asyncio.run(read()) == [(events[4:], 5)]


def test_the_sink_keeps_what_reaches_it_in_order() -> None:
    app = bspump.Application()
    pipeline = bspump.Pipeline(app, "P")
    sink = TestingSink(app, pipeline)
    pipeline.build(TestingSource(app, pipeline), sink)
    pipeline.start(bspump.RunInfo(role="local", run_id="test"))
    pipeline.process_batch([1.0, 2.0], [{"a": 1}, {"a": 2}])
    assert sink.events == [{"a": 1}, {"a": 2}]


def test_a_pipeline_built_with_the_in_memory_source_runs_on_every_topology(
        pipeline_workers: int) -> None:
    # No events given: the pipeline's own TestingSource is read, by the coordinator on a
    # cluster; the sink's events come back from every worker.
    result = run_pipeline(InMemoryPipeline, workers=pipeline_workers, shard_key="user",
                          time_field="t")
    assert result.window_counts("KindCounter") == {
        (T0, T0 + 60, "x"): 2, (T0, T0 + 60, "y"): 1, (T0 + 60, T0 + 120, "y"): 1,
        (T0 + 60, T0 + 120, "x"): 1, (T0 + 180, T0 + 240, "x"): 1}
    assert sorted(e["t"] for e in result.sink) == [e["t"] for e in EVENTS]
    assert result.dead_letters == [] and result.late_events == []
    assert (result.summary is None) == (pipeline_workers == 0)


def test_a_failed_cluster_run_raises_with_what_it_printed() -> None:
    with pytest.raises(RunFailed, match="no_such_key"):
        run_pipeline(InMemoryPipeline, workers=1, shard_key="user", time_field="t",
                     processors={"KindCounter": {"no_such_key": 1}})
    with pytest.raises(ConfigError, match="no_such_key"):
        run_pipeline(InMemoryPipeline, workers=0, shard_key="user", time_field="t",
                     processors={"KindCounter": {"no_such_key": 1}})


def test_a_cluster_needs_a_pipeline_it_can_import_by_name() -> None:
    class Local(InMemoryPipeline):
        pass

    with pytest.raises(ValueError, match="top level of an importable module"):
        run_pipeline(Local, workers=1, shard_key="user", time_field="t")
    assert run_pipeline(Local, workers=0, shard_key="user", time_field="t").workers == 0


def test_window_counts_refuses_a_row_written_twice() -> None:
    row = {"window_start": 0, "window_end": 60, "key": ["a", 1], "count": 2}
    result = PipelineResult(workers=0, windows={"W": [row]})
    assert result.window_counts("W") == {(0, 60, ("a", 1)): 2}
    result.windows["W"].append(dict(row))
    with pytest.raises(AssertionError, match="written twice"):
        result.window_counts("W")
