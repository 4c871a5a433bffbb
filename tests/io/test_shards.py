"""Sharded mode's input side, without workers: factoring sizes, cuts at record ends (CSV quoted
newlines included), bisection, and a shard reader that yields exactly what ``open_source``
yields for every format."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from parainfer.io.shards.reader import ShardInput, shard_records
from parainfer.batch.windows import position
from parainfer.io.shards.plan import (FactoringPlan, ShardPlanner, data_start, factoring_sizes, plan_parquet, plan_text,
                                       shard_lines, split_at_window, split_shard)
from parainfer.io.sources import open_source
from parainfer.records import Record


def rows(n: int = 1500) -> list[dict]:
    rng = random.Random(5)
    out = []
    for i in range(n):
        text = "word " * rng.randint(1, 25)
        if i % 97 == 5:
            text = 'said "hi",\nthen left\r\nagain'  # quotes, commas and newlines inside one CSV field
        if i % 401 == 7:
            text = "  "  # an empty text: a per-record error
        out.append({"id": f"r{i}", "text": text, "k": i})
    return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("shards")
    data = rows()
    paths = {ext: d / f"in.{ext}" for ext in ("jsonl", "csv", "txt", "parquet")}
    with paths["jsonl"].open("w", encoding="utf-8") as f:
        for i, r in enumerate(data):
            f.write(json.dumps(r) + "\n" + ("\n" if i % 300 == 1 else "") + ("[1]\n" if i % 500 == 2 else ""))
    with paths["csv"].open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "k"])
        for r in data:
            w.writerow([r["id"], r["text"], r["k"]])
    paths["txt"].write_text("".join(r["text"].replace("\n", " ").replace("\r", " ") + "\n" for r in data),
                            encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(data), paths["parquet"], row_group_size=97)
    paths["jsonl-noid"] = d / "noid.jsonl"  # no id column: ids are line numbers, as in record mode
    paths["jsonl-noid"].write_text("".join(json.dumps({k: v for k, v in r.items() if k != "id"}) + "\n" for r in data),
                                   encoding="utf-8")
    return paths


def as_tuples(items, shift: int = 0) -> list[tuple]:
    return [(x.line + shift, x.id, x.text, x.extra) if isinstance(x, Record) else (x.line + shift, x.id, x.reason)
            for x in items]


def read_shards(path: str, shards, first_line: int = 1) -> list[tuple]:
    """All shards' rows, line numbers made the file's as the driver does (a shard planned with
    first_line 0 numbers its lines from 1; the next starts where the previous one's lines end)."""
    inp, out, line = ShardInput(path, "text", "id"), [], first_line
    for s in shards:
        assert s.first_line in (0, line)
        out += as_tuples(shard_records(inp, s), line - 1 if s.first_line == 0 else 0)
        line += shard_lines(path, s)
    return out


def test_factoring_sizes_shrink_and_cover() -> None:
    sizes = list(factoring_sizes(10_000, 4, 50, 10_000))
    assert sum(sizes) >= 10_000 and sum(sizes[:-1]) < 10_000
    assert sizes[:4] == [1250] * 4  # first round: remaining / (2 N) each
    assert all(a >= b for a, b in zip(sizes, sizes[1:]))  # never larger later
    assert sizes[-1] <= 50 + 50  # the last ones near the minimum
    assert max(factoring_sizes(10**7, 2, 1, 1000)) == 1000  # capped


def drain(plan: FactoringPlan) -> list[int]:
    sizes = []
    while size := plan.next_size():
        plan.take(size)
        sizes.append(size)
    return sizes


def test_the_smallest_shard_grows_with_the_workers_once_the_driver_cost_is_measured() -> None:
    # 1M records, worker 35 µs a record (GPU-like), driver 0.2 ms a shard: with 1,024 workers
    # floor-size shards must take 1024 x 0.2 ms / 0.5 = 0.41 s, i.e. 11,703 records.
    sizes = {}
    for workers in (2, 1024):
        plan = FactoringPlan(100_000_000, workers, 100, 10**9)
        assert plan.floor == 100  # nothing measured yet: the static minimum
        plan.observe(driver_s=2e-4, unit_s=35e-6)
        sizes[workers] = drain(plan)
    assert FactoringPlan(1, 1024, 100, 10**9).floor == 100
    assert min(sizes[2]) == 100  # 2 workers: the measured floor (23 records) is below the minimum
    assert min(sizes[1024][:-1024]) >= 11_703  # (the last round may go below the floor: equal shares)
    assert len(sizes[1024]) < 8 * 1024  # a few shards per worker, not dozens
    assert sum(sizes[1024]) >= 100_000_000


def test_the_last_round_gives_every_worker_a_share() -> None:
    plan = FactoringPlan(10_000, 100, 10, 10**6)
    plan.observe(driver_s=1e-3, unit_s=1e-6)  # floor 200,000 units: more than what is left
    sizes = drain(plan)
    assert sizes == [100] * 100  # one round of equal shares instead of one 10,000-unit shard


@pytest.mark.parametrize("args", [(10, 0, 1, 1), (10, 2, 0, 1), (10, 2, 5, 4), (-1, 2, 1, 1)])
def test_a_bad_plan_is_refused_naming_the_values(args: tuple[int, int, int, int]) -> None:
    with pytest.raises(ValueError, match="workers=.*min_size=.*max_size"):
        FactoringPlan(*args)


@pytest.mark.parametrize("ext", ["jsonl", "csv", "txt", "parquet", "jsonl-noid"])
def test_shards_read_exactly_what_the_source_reads(ext: str, inputs: dict[str, Path]) -> None:
    path = str(inputs[ext])
    expected = as_tuples(open_source(path))
    if ext == "parquet":
        shards = plan_parquet(path, 0, 3, 100, 10**6)
        assert len({s.start for s in shards}) == len(shards) > 3
        assert all(s.start % 97 == 0 for s in shards)  # cut at row-group boundaries
    else:
        start, line = data_start(path)
        shards = plan_text(path, start, line, 3, 2000, 10**9)
        assert len(shards) > 6
        sizes = [s.end - s.start for s in shards]
        assert sizes[0] > 4 * sizes[-2]  # large first, small towards the end
    assert [s.end for s in shards[:-1]] == [s.start for s in shards[1:]]  # contiguous, no gap, no overlap
    assert [s.first_line for s in shards[:1]] == [data_start(path)[1]] and all(s.first_line > 0 for s in shards)
    assert read_shards(path, shards, data_start(path)[1]) == expected


def test_csv_cuts_never_split_a_quoted_field(inputs: dict[str, Path]) -> None:
    path = str(inputs["csv"])
    start, line = data_start(path)
    raw = Path(path).read_bytes()
    for s in plan_text(path, start, line, 4, 300, 10**9):
        assert raw[:s.start].count(b'"') % 2 == 0 and raw[s.start - 1:s.start] == b"\n"


@pytest.mark.parametrize("ext", ["jsonl", "csv", "parquet"])
def test_bisection_keeps_every_record_once(ext: str, inputs: dict[str, Path]) -> None:
    path = str(inputs[ext])
    inp = ShardInput(path, "text", "id")
    shard = (plan_parquet(path, 0, 1, 10**6, 10**6) if ext == "parquet" else
             plan_text(path, *data_start(path), 1, 10**9, 10**9))[0]
    whole = read_shards(path, [shard], shard.first_line or 1)
    pieces, singles = [shard], 0
    for _ in range(40):  # bisect the first piece down to a single record
        halves = split_shard(path, pieces[0])
        if halves is None:
            singles += 1
            break
        pieces[0:1] = list(halves)
    assert singles == 1 and len(as_tuples(shard_records(inp, pieces[0]))) == 1
    assert read_shards(path, pieces, shard.first_line or 1) == whole


def test_mode_choice(inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from parainfer.batch import mode as shard_mode
    from parainfer.config import JobConfig
    from parainfer.errors import UsageError

    def cfg(**kw) -> JobConfig:
        return JobConfig(**{"input": str(inputs["jsonl"]), "output": str(tmp_path / "o.jsonl"), **kw})

    assert shard_mode.choose_mode(cfg()) == "records"  # small input: not worth it
    assert shard_mode.choose_mode(cfg(shard_mode="on")) == "sharded"
    monkeypatch.setattr(shard_mode, "AUTO_MIN_BYTES", 1)
    assert shard_mode.choose_mode(cfg()) == "sharded"
    assert shard_mode.choose_mode(cfg(), in_memory=True) == "records"
    for out in ("o.csv", "o.parquet", "parts/"):  # every output format runs sharded, and a folder
        assert shard_mode.choose_mode(cfg(output=f"{tmp_path}/{out}")) == "sharded"
    assert shard_mode.choose_mode(cfg(task_timeout=5.0, batch_size="auto")) == "sharded"
    assert shard_mode.choose_mode(cfg(shard_mode="off")) == "records"
    with pytest.raises(UsageError, match="stdout output is one stream"):
        shard_mode.choose_mode(cfg(output="-", shard_mode="on"))
    with pytest.raises(UsageError, match="must be a .jsonl/.ndjson/.csv/.parquet file or a folder"):
        shard_mode.choose_mode(cfg(output=str(tmp_path / "o.txt"), shard_mode="on"))
    with pytest.raises(UsageError, match="only sharded mode keeps parts in a folder"):
        shard_mode.choose_mode(cfg(output=f"{tmp_path}/parts/", shard_mode="off"))
    with pytest.raises(UsageError, match="a folder of parts.*must be a file"):
        shard_mode.choose_mode(cfg(output=f"{tmp_path}/parts/", input=str(tmp_path / "in.tsv")))
    with pytest.raises(UsageError, match="'sometimes' is not one of auto, on, off"):
        shard_mode.choose_mode(cfg(shard_mode="sometimes"))


def planned(path: str, window: int, min_size: int) -> list:
    start, line = (0, 1) if path.endswith(".parquet") else data_start(path)
    planner = ShardPlanner(path, start, line, 3, min_size, 10**9, window=window)
    try:
        return list(iter(planner.next, None))
    finally:
        planner.close()


@pytest.mark.parametrize("ext", ["jsonl", "csv", "txt", "parquet"])
def test_shards_end_at_window_boundaries(ext: str, inputs: dict[str, Path]) -> None:
    """No window (input positions [k W, (k+1) W), batch.windows) is split between two shards, so
    a worker forms record mode's batches; shards still cover the input exactly once."""
    path, window = str(inputs[ext]), 64
    shards = planned(path, window, 1 if ext == "parquet" else 500)
    assert len(shards) > 4
    inp, owner = ShardInput(path, "text", "id"), {}
    for i, shard in enumerate(shards):
        for item in shard_records(inp, shard):
            assert owner.setdefault(position(item) // window, i) == i, f"window split between shards ({ext})"
    assert read_shards(path, shards, data_start(path)[1] if ext != "parquet" else 1) == as_tuples(open_source(path))
    halves = split_at_window(path, shards[0], window)
    assert halves is not None and halves[0].end == halves[1].start
    second = {position(x) // window for x in shard_records(inp, halves[1])}
    assert not second & {position(x) // window for x in shard_records(inp, halves[0])}
    one = shards[-1]  # the last round's shards hold a window or so: bisect down to one window
    while (h := split_at_window(path, one, window)) is not None:
        one = h[1]
    assert len({position(x) // window for x in shard_records(inp, one)}) == 1
