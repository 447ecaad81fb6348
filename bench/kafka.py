"""Events/s of the benchmark pipeline from a Kafka topic, next to the same events from a file.

    python bench/kafka.py [--events 1000000] [--repeat 3] [--write]

Starts a real Apache Kafka 3.9 broker on 127.0.0.1 (tests/kafka/broker.py), writes the
events of configs/bench.ini's generator as JSON to a 4-partition topic (keyed by
user_id) and to a JSON-lines file, then runs BenchPipeline (the documentation's
HourlyCountAnalyzer + UserSessionAnalyzer) from each with 1 and 2 workers, interleaved,
median of ``--repeat``. Each Kafka run reads the topic from the beginning in a consumer
group of its own and stops at the end offsets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from run import machine, replace_section, run_once  # noqa: E402

import bspump  # noqa: E402
from bspump.generator import GeneratorSource  # noqa: E402
from cluster.config import Config  # noqa: E402
from tests.kafka.broker import KafkaBroker  # noqa: E402

BASE = """
[cluster]
pipeline = example_pipelines:BenchPipeline
python_path = {configs}
key_groups = 256
checkpoint_dir = none

[pipeline:BenchPipeline]
shard_key = user_id
time_field = timestamp
allowed_lateness = {lateness}
{source}

[pipeline:BenchPipeline:HourlyCountAnalyzer]
count_field = type
"""

KAFKA = """source = bspump.kafka:KafkaSource

[connection:KafkaConnection]
bootstrap_servers = {bootstrap}

[pipeline:BenchPipeline:KafkaSource]
topic = bench
group_id = {group}
stop_at_end = yes
batch = 5000
"""

FILE = """source = bspump.file:FileJSONLinesSource

[pipeline:BenchPipeline:FileJSONLinesSource]
path = {path}
batch = 5000
"""


def events(n: int) -> list[str]:
    """The bench generator's events as JSON lines."""
    cfg = Config.from_string("[pipeline:P:GeneratorSource]\nusers = 10000\ntypes = 10\n"
                             f"count = {n}\nevents_per_second = 100\n")
    app = bspump.Application(cfg)
    gen = GeneratorSource(app, bspump.Pipeline(app, "P"))
    return [json.dumps(e) for e in gen.events(0, n)]


async def produce(bootstrap: str, lines: list[str]) -> None:
    """Write the lines to topic ``bench`` keyed by user_id."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=50,
                                max_batch_size=1 << 20)
    await producer.start()
    try:
        batch = []
        for line in lines:
            key = json.loads(line)["user_id"].encode()
            batch.append(await producer.send("bench", line.encode(), key=key))
            if len(batch) >= 20000:
                await asyncio.gather(*batch)
                batch = []
        await asyncio.gather(*batch)
    finally:
        await producer.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = ap.parse_args()
    lines = events(args.events)
    with tempfile.TemporaryDirectory() as d, KafkaBroker() as broker:
        broker.create_topic("bench", partitions=4)
        t0 = time.monotonic()
        asyncio.run(produce(broker.bootstrap, lines))
        print(f"produced {len(lines):,} events in {time.monotonic() - t0:.1f} s",
              file=sys.stderr)
        data = Path(d) / "events.jsonl"
        data.write_text("\n".join(lines) + "\n")
        rates: dict[tuple[str, int], list[float]] = {}
        for i in range(args.repeat):
            for workers in (1, 2):
                for name in ("file", "kafka"):
                    source = (KAFKA.format(bootstrap=broker.bootstrap, group=f"b{i}w{workers}")
                              if name == "kafka" else FILE.format(path=data))
                    cfg = Path(d) / f"{name}.ini"
                    # Partitions interleave in event time: lateness covers the whole input.
                    cfg.write_text(BASE.format(configs=ROOT / "configs", source=source,
                                               lateness=args.events / 100 + 60))
                    rate, _, n = run_once(cfg, workers)
                    assert n == args.events, f"{name} read {n} events"
                    rates.setdefault((name, workers), []).append(rate)
                    print(f"run {i + 1}: {name}, {workers} workers: {rate:,.0f} events/s",
                          file=sys.stderr)
    rows = ["| source | workers | events/s (median) | runs | vs file, same workers |",
            "|---|---|---|---|---|"]
    for workers in (1, 2):
        file_med = statistics.median(rates[("file", workers)])
        for name in ("file", "kafka"):
            med = statistics.median(rates[(name, workers)])
            rows.append(f"| {name} | {workers} | {med:,.0f} | "
                        f"{', '.join(f'{r:,.0f}' for r in rates[(name, workers)])} | "
                        f"{med / file_med:.2f}x |")
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    block = "\n".join([f"{args.events:,} events; {stamp}; {machine()}; Kafka 3.9 broker on "
                       "the same machine.",
                       f"Command: `python bench/kafka.py --events {args.events} "
                       f"--repeat {args.repeat}`", "", *rows])
    print(block)
    if args.write:
        replace_section("bench/kafka.py", block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
