"""kamado.executor: results in input order for every executor and worker count, errors name the item."""

from __future__ import annotations

import operator

import pytest

from kamado import executor
from kamado.config import KamadoError
from kamado.executor import Executor, TaskError, describe_item

ITEMS = ["7", "3", "12", "0", "5", "41", "9"]


def test_local_in_process_and_pool_agree() -> None:
    want = [int(x) for x in ITEMS]
    ticks: list[int] = []
    assert executor.map(int, ITEMS, workers=1, progress=ticks.append) == want
    assert ticks == want  # the progress callback gets every finished result
    assert executor.map(int, ITEMS, workers=2) == want
    assert executor.map(int, [], workers=2) == []


def test_imap_streams_in_order_with_a_bounded_window() -> None:
    fed: list[int] = []

    def items():
        for i in range(20):
            fed.append(i)
            yield i

    with Executor("local", 2) as ex:
        out = []
        for r in ex.imap(operator.neg, items(), max_in_flight=3):
            assert len(fed) - len(out) <= 3  # never more than 3 submitted and not yet yielded
            out.append(r)
        assert out == [-i for i in range(20)]
        assert ex.map(operator.neg, [1, 2, 3]) == [-1, -2, -3]  # the same pool serves another pass


@pytest.mark.parametrize("workers", [1, 2])
def test_error_names_the_failing_item(workers: int) -> None:
    with pytest.raises(TaskError, match=r"parsing failed on item 2 \(x\): ValueError: invalid literal") as ei:
        executor.map(int, ["1", "2", "x", "4"], workers=workers, label="parsing")
    assert ei.value.index == 2 and ei.value.item == "x"
    assert isinstance(ei.value.__cause__, ValueError)
    assert isinstance(ei.value, KamadoError)
    with Executor("local", workers) as ex, pytest.raises(TaskError, match=r"item 1 \(y\)"):
        list(ex.imap(int, iter(["1", "y", "3"])))


def test_describe_and_unknown_executor() -> None:
    assert describe_item({"index": 3, "path": "a/b.jsonl"}) == "a/b.jsonl"
    assert describe_item(("x" * 200,)).endswith("...")
    with pytest.raises(KamadoError, match="unknown executor"):
        Executor("spark")


def test_initializer_runs_once_per_executor() -> None:
    import os

    os.environ.pop("KAMADO_TEST_EXECUTOR_INIT", None)
    with Executor("local", 1, initializer=os.environ.setdefault, initargs=("KAMADO_TEST_EXECUTOR_INIT", "a")) as ex:
        assert ex.map(os.environ.get, ["KAMADO_TEST_EXECUTOR_INIT"]) == ["a"]
    with Executor("local", 2, initializer=os.putenv, initargs=("KAMADO_TEST_EXECUTOR_INIT", "b")) as ex:
        # the worker processes got the variable set by the initializer (putenv: seen by children only)
        assert ex.map(os.getenv, ["PATH", "PATH"]) == [os.environ["PATH"]] * 2


@pytest.mark.slow  # 19 s: starts a Ray cluster (test-fast run on a loaded box)
def test_ray_matches_local() -> None:
    pytest.importorskip("ray")
    local = executor.map(int, ITEMS, workers=2)
    with Executor("ray", 2) as ex:
        assert ex.map(int, ITEMS) == local
        assert list(ex.imap(int, iter(ITEMS), max_in_flight=2)) == local
        with pytest.raises(TaskError, match=r"item 2 \(x\): ValueError"):
            ex.map(int, ["1", "2", "x"])
    import ray

    assert not ray.is_initialized()  # the session this executor started is shut down
