"""Mutation checks: plant one-line defects in the critical rules, one at a time.

Each mutant names a file, an exact snippet of it, the snippet's defective replacement
and the tests expected to catch it. For each mutant the script:

1. copies the files git knows of in this tree (tracked with their uncommitted edits, and
   new ones not ignored) into a scratch folder, once for the whole run, so the caller's
   tree is never touched;
2. replaces the snippet there (it must occur exactly once), runs only that mutant's tests
   (``pytest -x -q -p no:cacheprovider``, with a timeout) with the scratch copy first on
   ``PYTHONPATH``, so the cluster's own child processes import the mutant too;
3. records CAUGHT (the first failing test), SURVIVED, TIMEOUT (its tests hung: counted
   as caught) or SKIPPED (every test skipped, e.g. no Java for the Kafka broker: not
   checked), puts the file back, goes on.

Before the mutants, the same tests run once on the unchanged copy (the baseline): a test
that fails without any defect would otherwise count as a catch.

Exit status 1 when a mutant survived or was not checked, when a snippet is no longer
found exactly once (the list must follow the code), when a listed test is not found, or
when the baseline fails. ``--list`` shows the list; ``--only A,B`` runs those;
``--skip-kafka`` leaves out the mutants whose tests start a Kafka broker.

    python bench/mutants.py                 # every mutant (a few minutes)
    python bench/mutants.py --skip-kafka    # without the ~35 s broker test
    python bench/mutants.py --only late-rule,count-value
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 240.0  # seconds per mutant; a mutant that hangs its tests counts as caught


@dataclass(frozen=True)
class Mutant:
    """One planted defect: ``original`` in ``file`` becomes ``replacement``."""

    name: str
    file: str
    original: str
    replacement: str
    tests: tuple[str, ...]
    kafka: bool = False  # its tests start a real broker


TI = "tests/test_cluster/test_intake.py"
TS = "tests/test_bspump/test_sources.py"
TA = "tests/test_bspump/test_api.py"
TC = "tests/test_cluster/test_checkpoint.py"

# The maintained list. Keep each catching test as near to the rule as it can be (a unit
# test before an integration test); add a mutant when a rule lands.
MUTANTS: tuple[Mutant, ...] = (
    Mutant("watermark-lateness", "cluster/eventtime.py",
           "w_after = np.maximum(cm - self.lateness, self.watermark)",
           "w_after = np.maximum(cm, self.watermark)",
           (TI + "::test_lateness_is_judged_against_the_watermark_before_each_record",
            TI + "::test_lateness_carries_over_between_batches")),
    Mutant("late-rule", "cluster/eventtime.py",
           "late = times < w_before",
           "late = times <= w_before",
           (TI + "::test_a_record_at_the_watermark_is_not_late",
            TI + "::test_lateness_is_judged_against_the_watermark_before_each_record")),
    Mutant("session-timeout", "bspump/analyzer/session.py",
           "if t - s.last > self.session_timeout:",
           "if t - s.last >= self.session_timeout:",
           (TA + "::test_a_session_ends_exactly_when_the_gap_exceeds_the_timeout",)),
    Mutant("key-hash", "bspump/keys.py",
           "return zlib.crc32(key_bytes(key))",
           "return hash(key_bytes(key)) & 0xFFFFFFFF",
           ("tests/test_cluster/test_layout.py",)),
    Mutant("merge-sum", "cluster/merge.py",
           "acc[k] = acc.get(k, 0.0) + v",
           "acc[k] = v",
           ("tests/test_cluster/test_merge.py",)),
    Mutant("rescale-mod", "bspump/state.py",
           "return old_worker % self.workers == self.worker",
           "return old_worker == self.worker",
           ("tests/test_bspump/test_restore_info.py",)),
    Mutant("checkpoint-checksum", "cluster/checkpoint.py",
           "if checksums and zlib.crc32(data) != meta.crc32:",
           "if checksums and len(data) != meta.size:",
           (TC,)),
    Mutant("manifest-every-worker", "cluster/manifest.py",
           "for w in range(m.workers):",
           "for w in range(m.workers - 1):",
           (TC,)),
    Mutant("checkpoint-file-missing", "cluster/checkpoint.py",
           'except FileNotFoundError:\n        return f"{name} is missing"',
           'except FileNotFoundError:\n        return None',
           (TC,)),
    Mutant("restore-truncation", "bspump/resultfiles.py",
           "os.ftruncate(fd, min(length, os.fstat(fd).st_size))",
           "os.ftruncate(fd, os.fstat(fd).st_size)",
           ("tests/test_cluster/test_outputs.py::"
            "test_restore_cuts_each_result_file_to_its_checkpointed_length",)),
    Mutant("period-floor", "bspump/analyzer/timewindow.py",
           "period = math.floor(self.Pipeline.event_time / self.resolution)",
           "period = round(self.Pipeline.event_time / self.resolution)",
           (TA + "::test_time_window_counts_closes_periods_and_ticks",)),
    Mutant("period-floor-batch", "bspump/analyzer/timewindow.py",
           "periods = np.floor(times / self.resolution).astype(np.int64)",
           "periods = np.round(times / self.resolution).astype(np.int64)",
           (TA + "::test_count_batch_puts_each_event_in_the_period_its_time_floors_to",)),
    Mutant("count-value", "bspump/analyzer/timewindow.py",
           "ring[slot, row] += value",
           "ring[slot, row] += 1",
           (TA + "::test_time_window_counts_closes_periods_and_ticks",)),
    Mutant("fsync-before-rename", "cluster/outputs.py",
           "f.flush()\n            os.fsync(f.fileno())\n        os.replace(tmp, path)",
           "f.flush()\n        os.replace(tmp, path)",
           ("tests/test_cluster/test_durability.py::"
            "test_one_atomic_write_is_fsync_rename_fsync_of_the_folder",
            "tests/test_cluster/test_durability.py")),
    Mutant("kafka-commit-after-manifest", "coordinator/checkpoints.py",
           "        checkpoint.write_manifest(folder, manifest)\n",
           "        commit = getattr(self.pipeline.Source, 'commit', None)\n"
           "        if commit is not None and self.router.position is not None:\n"
           "            await commit(self.router.position)\n"
           "        checkpoint.write_manifest(folder, manifest)\n",
           ("tests/kafka/test_commit_order.py",), kafka=True),
    Mutant("raw-position-partial-line", "bspump/file/source.py",
           'position = {"offset": f.tell() - len(carry), "line": line_no}',
           'position = {"offset": f.tell(), "line": line_no}',
           (TS + "::test_raw_json_lines_resume_at_the_start_of_a_line_cut_by_a_chunk",)),
    Mutant("raw-dead-letter", "cluster/intake.py",
           'result.dead.append(Rejected(_text(lines[i]), f"{where(i)}: {e}"))',
           "pass",
           (TI + "::test_raw_lines_reject_the_same_records_as_decoded_ones",)),
    Mutant("kafka-auto-commit", "bspump/kafka/source.py",
           '"enable_auto_commit": False,',
           '"enable_auto_commit": True,',
           ("tests/test_bspump/test_kafka_commits.py",)),
    Mutant("ledger-unaccounted", "coordinator/ledger.py",
           "return self.in_flight == 0 and self.unaccounted == 0 and self.held == 0",
           "return self.in_flight == 0 and self.held == 0",
           ("tests/test_coordinator/test_ledger.py",)),
    Mutant("far-ahead-hold", "cluster/jumps.py",
           "return math.isfinite(front) and t > front + self.max_jump",
           "return math.isfinite(front) and t > front + 2 * self.max_jump",
           ("tests/test_cluster/test_jumps.py",)),
    Mutant("folder-lock", "cluster/dirlock.py",
           "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n            break",
           "fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)\n            break",
           ("tests/test_cluster/test_dirlock.py",
            "tests/integration/test_refusals.py::"
            "test_a_second_run_on_the_same_folder_is_refused_at_once_with_the_first_ones_pid",)),
)


@dataclass
class Outcome:
    """What happened to one mutant."""

    mutant: Mutant
    line: int
    result: str  # CAUGHT, TIMEOUT, SURVIVED, SKIPPED, NOT FOUND, AMBIGUOUS, NO TESTS, BROKEN
    by: str
    seconds: float
    detail: str = ""  # the first line of the catching test's failure

    @property
    def ok(self) -> bool:
        return self.result in ("CAUGHT", "TIMEOUT")


def locate(text: str, snippet: str) -> tuple[int, str | None]:
    """The line number where ``snippet`` starts, or why it cannot be used."""
    count = text.count(snippet)
    if count == 0:
        return 0, "NOT FOUND"
    if count > 1:
        return 0, "AMBIGUOUS"
    return text[: text.index(snippet)].count("\n") + 1, None


def scratch_copy(src: Path) -> Path:
    """Copy the files git knows of in ``src`` (as they are now, new ones too) to a temp folder."""
    dest = Path(tempfile.mkdtemp(prefix="bspump-mutants-"))
    listed = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    names = subprocess.run(listed, cwd=src, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, names):
        source = src / name
        if not source.is_file():  # deleted in the tree but not yet in the index
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    return dest


def run_tests(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[int | None, str]:
    """Run ``tests`` in ``copy``; (pytest exit status or None on timeout, its output)."""
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    # -x: the first failure is the answer; -rfEs prints its id (or why all were skipped).
    argv = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-rfEs",
            *tests]
    # A session of its own, so a timeout kills the whole tree (clusters started by tests).
    proc = subprocess.Popen(argv, cwd=copy, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out


_FAILED = re.compile(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$", re.M)


def first_failure(output: str) -> tuple[str, str]:
    """The id of the first failing test in pytest's short summary, and why it failed."""
    found = _FAILED.search(output)
    why = re.search(r"^E +(.+)$", output, re.M)  # the first line of the first failure
    return (found.group(1) if found else "?"), (why.group(1) if why else "")


def _only_skipped(output: str) -> bool:
    """Whether pytest's last line says tests were skipped and none passed."""
    last = output.strip().splitlines()[-1] if output.strip() else ""
    return "skipped" in last and "passed" not in last


def _skip_reason(output: str) -> str:
    found = re.search(r"^SKIPPED \[\d+\] \S+ (.+)$", output, re.M)
    return found.group(1) if found else "every test skipped"


def check_imports(copy: Path) -> None:
    """Refuse to run when the scratch copy is not what the tests import."""
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run([sys.executable, "-P", "-c",
                          "import cluster, coordinator, workers, bspump;"
                          "print(cluster.__file__, coordinator.__file__, workers.__file__,"
                          " bspump.__file__)"],
                         env=env, capture_output=True, text=True, check=True).stdout.split()
    wrong = [f for f in out if not Path(f).resolve().is_relative_to(copy.resolve())]
    if wrong:
        sys.exit(f"the scratch copy is not imported first: {wrong}")


def mutate(copy: Path, m: Mutant, timeout: float) -> Outcome:
    """Plant ``m`` in the copy, run its tests, put the file back."""
    path = copy / m.file
    text = path.read_text()
    line, problem = locate(text, m.original)
    if problem is not None:
        return Outcome(m, line, problem, "", 0.0)
    began = time.monotonic()
    path.write_text(text.replace(m.original, m.replacement))
    try:
        status, out = run_tests(copy, m.tests, timeout)
    finally:
        path.write_text(text)
    took = time.monotonic() - began
    if status is None:
        return Outcome(m, line, "TIMEOUT", f"(no answer in {timeout:.0f} s)", took)
    if status == 0:
        if _only_skipped(out):  # no broker here, say: nothing was checked
            return Outcome(m, line, "SKIPPED", _skip_reason(out), took)
        return Outcome(m, line, "SURVIVED", "", took)
    if status in (1, 2):  # a test failed, or collecting failed (counted: it fails the suite)
        test, detail = first_failure(out)
        return Outcome(m, line, "CAUGHT", test, took, detail)
    result = "NO TESTS" if status == 5 else "BROKEN"
    return Outcome(m, line, result, f"pytest exit status {status}", took)


def table(outcomes: list[Outcome]) -> str:
    """A Markdown table of the outcomes."""
    rows = ["| mutant | file:line | result | caught by | s |", "|---|---|---|---|---:|"]
    for o in outcomes:
        where = f"{o.mutant.file}:{o.line}" if o.line else o.mutant.file
        by = f"`{o.by}`" if o.by and o.result == "CAUGHT" else o.by
        rows.append(f"| {o.mutant.name} | {where} | {o.result} | {by} | {o.seconds:.1f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Run the selected mutants; 0 when every one was caught."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="comma-separated mutant names")
    ap.add_argument("--skip-kafka", action="store_true",
                    help="leave out mutants whose tests start a Kafka broker")
    ap.add_argument("--list", action="store_true", help="print the mutants and exit")
    ap.add_argument("--no-baseline", action="store_true",
                    help="do not first run the tests on the unchanged copy")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="also print each catching test's failure line")
    ap.add_argument("--timeout", type=float, default=TIMEOUT, help="seconds per mutant")
    args = ap.parse_args(argv)

    chosen = list(MUTANTS)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(names) - {m.name for m in MUTANTS})
        if unknown:
            ap.error(f"unknown mutants: {', '.join(unknown)}")
        chosen = [m for m in MUTANTS if m.name in names]
    if args.skip_kafka:
        chosen = [m for m in chosen if not m.kafka]

    if args.list:
        for m in chosen:
            line, problem = locate((ROOT / m.file).read_text(), m.original)
            print(f"{m.name:28} {m.file}:{line or '?'}{' ' + problem if problem else ''}")
            print(f"{'':28}   - {m.original.strip()}".replace("\n", "\n" + " " * 33))
            print(f"{'':28}   + {m.replacement.strip()}".replace("\n", "\n" + " " * 33))
            for t in m.tests:
                print(f"{'':28}   test: {t}")
        return 0

    copy = scratch_copy(ROOT)
    try:
        check_imports(copy)
        if not args.no_baseline:
            tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
            began = time.monotonic()
            status, out = run_tests(copy, tests, args.timeout * 2)
            print(f"baseline: {len(tests)} test selections, unchanged code, "
                  f"{time.monotonic() - began:.1f} s: "
                  f"{'pass' if status == 0 else 'FAIL'}", flush=True)
            if status == 0 and _only_skipped(out):
                print(f"every baseline test was skipped: {_skip_reason(out)}")
                return 1
            if status != 0:
                print(out[-3000:])
                print("the baseline fails: a mutant's catch would mean nothing")
                return 1
        outcomes = []
        for m in chosen:
            o = mutate(copy, m, args.timeout)
            print(f"{o.result:9} {m.name} ({o.seconds:.1f} s) {o.by}", flush=True)
            if args.verbose and o.detail:
                print(f"          {o.detail[:300]}", flush=True)
            outcomes.append(o)
    finally:
        shutil.rmtree(copy, ignore_errors=True)

    print()
    print(table(outcomes))
    caught = sum(o.ok for o in outcomes)
    print(f"\n{caught} of {len(outcomes)} mutants caught")
    return 0 if caught == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
