"""A real, single-node Apache Kafka broker (KRaft mode) for the tests: no mocks.

The broker jars and all their runtime dependencies are fetched once from Maven Central with
Maven's dependency plugin into a cache folder (``$BSPUMP_KAFKA_CACHE`` or
``~/.cache/bspump-cluster/kafka-3.9``).  Each :class:`KafkaBroker` then runs ``kafka.Kafka`` in
a JVM of its own, listening only on 127.0.0.1 on free ports, with its data and its log in a
temporary folder that :meth:`KafkaBroker.stop` removes.

Use from Python::

    with KafkaBroker() as broker:
        broker.create_topic("events", partitions=3)
        ...  # talk to broker.bootstrap ("127.0.0.1:PORT") with aiokafka

Use from a shell (from the repository root; ``scripts/kafka`` does the same)::

    python -m tests.kafka.broker fetch   # fill the cache (instant once filled)
    python -m tests.kafka.broker start   # run a broker in the foreground, prints bootstrap=...
    python -m tests.kafka.broker stop    # stop the broker that a ``start`` elsewhere runs
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import base64
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self, TypeVar

KAFKA_VERSION = "3.9.2"
"""Apache Kafka release that is fetched and run (the newest 3.9.x on Maven Central)."""

SCALA_BINARY_VERSION = "2.13"
SLF4J_VERSION = "1.7.36"
"""The slf4j-api Kafka 3.9 is built against; ``slf4j-reload4j`` of that version binds it."""

DEPENDENCY_PLUGIN_VERSION = "3.8.1"
HOST = "127.0.0.1"
"""The only address a broker binds to, advertises or is probed on."""

NODE_ID = 1
CACHE_ENV = "BSPUMP_KAFKA_CACHE"
KEEP_ENV = "BSPUMP_KAFKA_KEEP"
"""Set to 1 to keep a stopped broker's temporary folder (data and ``broker.log``)."""

DEFAULT_JVM_OPTIONS: tuple[str, ...] = (
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:-UsePerfData",
    "-Djava.awt.headless=true",
)
"""A small heap and a single-threaded GC: light on a 2-core machine, still fully JIT-compiled."""

_MARKER = ".fetch-complete"
_KEEP_HINT = f"the end of its log follows ({KEEP_ENV}=1 keeps its temporary folder)"
_LOG_NAME = "broker.log"
_T = TypeVar("_T")


class KafkaBrokerError(RuntimeError):
    """Base class of the errors of this module."""


class BrokerUnavailable(KafkaBrokerError):
    """No broker can run on this machine: Java is missing or does not work.

    ``reason`` says why.  Tests may skip on this error (locally), never on the others.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FetchError(KafkaBrokerError):
    """The Kafka jars could not be fetched into the cache folder."""


class BrokerStartError(KafkaBrokerError):
    """The broker process was started but did not come up (the message holds its log tail)."""


# ---------------------------------------------------------------------------------------------
# Java and the jar cache
# ---------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """Return ``$BSPUMP_KAFKA_CACHE`` or ``~/.cache/bspump-cluster/kafka-3.9``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "bspump-cluster" / "kafka-3.9"


def find_java(java: str | os.PathLike[str] | None = None) -> str:
    """Return the path of a working ``java`` executable.

    Looks at ``java`` if given, else ``$JAVA_HOME/bin/java``, else ``java`` on ``PATH``.

    Raises:
        BrokerUnavailable: no Java was found, or it does not run.
    """
    if java is not None:
        candidate: str | None = os.fspath(java)
        where = f"{candidate!r} (given explicitly)"
    else:
        java_home = os.environ.get("JAVA_HOME")
        home_java = Path(java_home, "bin", "java") if java_home else None
        if home_java is not None and home_java.is_file():
            candidate, where = str(home_java), f"{home_java} (from $JAVA_HOME)"
        else:
            candidate, where = shutil.which("java"), "`java` on PATH"
    if candidate is None:
        raise BrokerUnavailable(
            "Java is missing: no `java` on PATH nor in $JAVA_HOME/bin; the Kafka broker runs "
            "on a Java runtime (e.g. `apt-get install openjdk-17-jre-headless`)"
        )
    _check_java(candidate, where)
    return candidate


_java_checked: set[str] = set()


def _check_java(java: str, where: str) -> None:
    """Run ``java -version`` once per path; raise :class:`BrokerUnavailable` if it fails."""
    if java in _java_checked:
        return
    try:
        result = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise BrokerUnavailable(f"Java at {where} cannot be run: {exc}") from exc
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip()
        raise BrokerUnavailable(
            f"Java at {where} fails (`java -version` exited {result.returncode}): {output}"
        )
    _java_checked.add(java)


def _kafka_jar(lib_dir: Path) -> Path:
    return lib_dir / f"kafka_{SCALA_BINARY_VERSION}-{KAFKA_VERSION}.jar"


def is_fetched(cache_dir: str | os.PathLike[str] | None = None) -> bool:
    """Tell whether :func:`fetch` has completed for this Kafka version in ``cache_dir``."""
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    marker = cache / _MARKER
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(info, dict)
        and info.get("kafka") == KAFKA_VERSION
        and _kafka_jar(cache / "lib").is_file()
    )


def _pom_xml() -> str:
    """The throwaway pom whose runtime dependencies are the broker's classpath."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by tests/kafka/broker.py: lists the jars a test Kafka broker runs on. -->
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0
                             https://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>bspump-cluster.tests</groupId>
  <artifactId>kafka-broker-runtime</artifactId>
  <version>{KAFKA_VERSION}</version>
  <packaging>pom</packaging>
  <properties>
    <project.build.sourceEncoding>UTF-8</project.build.sourceEncoding>
  </properties>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{SCALA_BINARY_VERSION}</artifactId>
      <version>{KAFKA_VERSION}</version>
    </dependency>
    <!-- Kafka 3.9 logs through slf4j 1.7 and configures log4j 1.x: bind slf4j to reload4j. -->
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-reload4j</artifactId>
      <version>{SLF4J_VERSION}</version>
    </dependency>
  </dependencies>
  <build>
    <pluginManagement>
      <plugins>
        <plugin>
          <groupId>org.apache.maven.plugins</groupId>
          <artifactId>maven-dependency-plugin</artifactId>
          <version>{DEPENDENCY_PLUGIN_VERSION}</version>
        </plugin>
      </plugins>
    </pluginManagement>
  </build>
</project>
"""


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (so parallel fetches do the work once)."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fetch(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    mvn: str | None = None,
    timeout: float = 1800.0,
) -> Path:
    """Fetch the Kafka broker jars and their runtime dependencies; return the jar folder.

    Writes a throwaway ``pom.xml`` into ``cache_dir`` and runs
    ``mvn -q dependency:copy-dependencies -DincludeScope=runtime`` on it.  A marker file records
    a completed fetch, so later calls return at once.  Safe to call from parallel processes.

    Args:
        cache_dir: where to keep the jars; defaults to :func:`default_cache_dir`.
        mvn: the Maven executable; defaults to ``mvn`` on ``PATH``.
        timeout: seconds Maven may take.

    Raises:
        FetchError: Maven is missing or failed.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    lib_dir = cache / "lib"
    if is_fetched(cache):
        return lib_dir
    cache.mkdir(parents=True, exist_ok=True)
    with _file_lock(cache / ".lock"):
        if is_fetched(cache):
            return lib_dir
        mvn = mvn or shutil.which("mvn")
        if mvn is None:
            raise FetchError(
                f"Maven (`mvn`) is needed once to fetch the Kafka {KAFKA_VERSION} jars into "
                f"{cache}, and it is not on PATH (e.g. `apt-get install maven`)"
            )
        pom = cache / "pom.xml"
        pom.write_text(_pom_xml())
        staging = cache / "lib.partial"
        shutil.rmtree(staging, ignore_errors=True)
        command = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ]
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, check=False
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise FetchError(f"running {' '.join(command)} failed: {exc}") from exc
        if result.returncode != 0:
            output = _tail(result.stdout + result.stderr, 40)
            raise FetchError(f"`{' '.join(command)}` exited {result.returncode}:\n{output}")
        if not _kafka_jar(staging).is_file():
            raise FetchError(f"Maven finished but {_kafka_jar(staging).name} is not in {staging}")
        shutil.rmtree(lib_dir, ignore_errors=True)
        staging.rename(lib_dir)
        jars = sorted(p.name for p in lib_dir.glob("*.jar"))
        (cache / _MARKER).write_text(
            json.dumps({"kafka": KAFKA_VERSION, "fetched": time.time(), "jars": jars}, indent=1)
        )
    return lib_dir


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _read_tail(path: Path, lines: int = 40) -> str:
    try:
        return _tail(path.read_text(errors="replace"), lines)
    except OSError:
        return "(no log)"


def _free_port(taken: set[int]) -> int:
    """Return a TCP port of 127.0.0.1 that is free now and not in ``taken``."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if port not in taken:
            return port


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0):
            return True
    except OSError:
        return False


def _random_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding, no leading '-'."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _run_sync(factory: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine to completion from sync code, even if this thread has a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def _die_with_parent_prefix() -> list[str]:
    """A command prefix that makes the broker get SIGKILL if this process dies, or ``[]``.

    Uses util-linux ``setpriv --pdeathsig`` (Linux).  Only used when the broker is started from
    the main thread: the kernel sends the signal when the *thread* that forked exits, and the
    main thread lives as long as the process.  So a test run killed hard leaves no JVM behind.
    """
    if not sys.platform.startswith("linux"):
        return []
    if threading.current_thread() is not threading.main_thread():
        return []
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


_live_brokers: set[KafkaBroker] = set()


@atexit.register
def _stop_live_brokers() -> None:
    for broker in list(_live_brokers):
        broker.stop()


# ---------------------------------------------------------------------------------------------
# The broker
# ---------------------------------------------------------------------------------------------


class KafkaBroker:
    """One single-node Kafka broker (combined KRaft broker and controller) on 127.0.0.1.

    Args:
        cache_dir: the jar cache (see :func:`fetch`); fetched on first :meth:`start`.
        java: the ``java`` executable; defaults to what :func:`find_java` finds.
        startup_timeout: seconds :meth:`start` waits for the broker to answer.
        jvm_options: JVM options; defaults to :data:`DEFAULT_JVM_OPTIONS`.
        extra_config: ``server.properties`` entries that override or add to the defaults.
        keep_workdir: keep the temporary folder after :meth:`stop` (also ``$BSPUMP_KAFKA_KEEP``).
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike[str] | None = None,
        *,
        java: str | os.PathLike[str] | None = None,
        startup_timeout: float = 60.0,
        jvm_options: tuple[str, ...] | list[str] | None = None,
        extra_config: dict[str, str | int] | None = None,
        keep_workdir: bool | None = None,
    ) -> None:
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.java = java
        self.startup_timeout = startup_timeout
        self.jvm_options = tuple(jvm_options if jvm_options is not None else DEFAULT_JVM_OPTIONS)
        self.extra_config = dict(extra_config or {})
        if keep_workdir is None:
            keep_workdir = os.environ.get(KEEP_ENV, "").lower() in ("1", "true", "yes")
        self.keep_workdir = keep_workdir
        self.cluster_id: str | None = None
        self.startup_seconds: float | None = None
        """Seconds the last :meth:`start` took, fetch excluded."""
        self._port: int | None = None
        self._controller_port: int | None = None
        self._workdir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    # -- properties -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The PLAINTEXT port clients connect to."""
        if self._port is None:
            raise KafkaBrokerError("the broker is not started")
        return self._port

    @property
    def controller_port(self) -> int:
        """The KRaft controller port."""
        if self._controller_port is None:
            raise KafkaBrokerError("the broker is not started")
        return self._controller_port

    @property
    def bootstrap(self) -> str:
        """``"127.0.0.1:PORT"``, for ``bootstrap_servers``."""
        return f"{HOST}:{self.port}"

    @property
    def workdir(self) -> Path:
        """The temporary folder with ``server.properties``, the data and ``broker.log``."""
        if self._workdir is None:
            raise KafkaBrokerError("the broker is not started")
        return self._workdir

    @property
    def log_path(self) -> Path:
        """The broker's log (its stdout and stderr, where log4j writes too)."""
        return self.workdir / _LOG_NAME

    @property
    def pid(self) -> int | None:
        """The JVM's process id while it runs."""
        return self._process.pid if self.running and self._process else None

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._process is not None and self._process.poll() is None

    def __repr__(self) -> str:
        where = self.bootstrap if self._port is not None else "not started"
        return f"<KafkaBroker {KAFKA_VERSION} {where} running={self.running}>"

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> Self:
        """Fetch the jars if needed, format storage, start the JVM and wait until it answers.

        Returns ``self``.

        Raises:
            BrokerUnavailable: Java is missing or does not work.
            FetchError: the jars could not be fetched.
            BrokerStartError: the broker did not come up within ``startup_timeout``.
        """
        if self.running:
            return self
        java = find_java(self.java)
        lib_dir = fetch(self.cache_dir)
        began = time.monotonic()
        attempts = 3
        for attempt in range(1, attempts + 1):
            try:
                self._start_once(java, lib_dir)
            except _PortTaken:
                self.stop()
                if attempt == attempts:
                    raise BrokerStartError(
                        f"the broker's ports were taken by others {attempts} times in a row"
                    ) from None
                continue
            except BaseException:
                self.stop()
                raise
            break
        self.startup_seconds = time.monotonic() - began
        return self

    def _start_once(self, java: str, lib_dir: Path) -> None:
        self._port = _free_port(set())
        self._controller_port = _free_port({self._port})
        self._workdir = Path(tempfile.mkdtemp(prefix="bspump-kafka-"))
        _live_brokers.add(self)
        self.cluster_id = _random_cluster_id()
        properties = self.workdir / "server.properties"
        properties.write_text(self._server_properties())
        log4j = self.workdir / "log4j.properties"
        log4j.write_text(_LOG4J_PROPERTIES)
        classpath = str(lib_dir / "*")
        jvm = [java, *self.jvm_options, f"-Dlog4j.configuration={log4j.as_uri()}"]
        jvm += [f"-Dkafka.logs.dir={self.workdir}", "-cp", classpath]

        with self.log_path.open("ab") as log:
            log.write(b"=== kafka.tools.StorageTool format\n")
            log.flush()
            try:
                formatted = subprocess.run(
                    [
                        *jvm,
                        "kafka.tools.StorageTool",
                        "format",
                        "-t",
                        self.cluster_id,
                        "-c",
                        str(properties),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=max(self.startup_timeout, 60.0),
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise BrokerStartError(
                    f"formatting the storage took over {exc.timeout:.0f} s:\n"
                    f"{_read_tail(self.log_path)}"
                ) from exc
            if formatted.returncode != 0:
                raise BrokerStartError(
                    f"formatting the storage failed (exit {formatted.returncode}):\n"
                    f"{_read_tail(self.log_path)}"
                )
            log.write(b"=== kafka.Kafka\n")
            log.flush()
            self._process = subprocess.Popen(
                [*_die_with_parent_prefix(), *jvm, "kafka.Kafka", str(properties)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
            )
        self._wait_until_ready()

    def _server_properties(self) -> str:
        port, cport = self.port, self.controller_port
        config: dict[str, str | int] = {
            "process.roles": "broker,controller",
            "node.id": NODE_ID,
            "controller.quorum.voters": f"{NODE_ID}@{HOST}:{cport}",
            "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{cport}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.workdir / "data"),
            "num.partitions": 1,
            "default.replication.factor": 1,
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": 1,
            # One partition instead of 50: the first consumer group starts faster.
            "offsets.topic.num.partitions": 1,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "transaction.state.log.num.partitions": 1,
            "group.initial.rebalance.delay.ms": 0,
            "num.network.threads": 2,
            "num.io.threads": 2,
            "num.recovery.threads.per.data.dir": 1,
        }
        config.update(self.extra_config)
        lines = [f"# Written by tests/kafka/broker.py (Kafka {KAFKA_VERSION}, single node)"]
        lines += [f"{key}={value}" for key, value in config.items()]
        return "\n".join(lines) + "\n"

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            process = self._process
            assert process is not None
            if process.poll() is not None:
                log = _read_tail(self.log_path, 60)
                if re.search(r"Address already in use|BindException", log):
                    raise _PortTaken
                raise BrokerStartError(
                    f"the Kafka broker exited with code {process.returncode} while starting; "
                    f"{_KEEP_HINT}:\n{log}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerStartError(
                    f"the Kafka broker did not answer on {self.bootstrap} within "
                    f"{self.startup_timeout:.0f} s; {_KEEP_HINT}:\n"
                    f"{_read_tail(self.log_path, 60)}"
                )
            probe_timeout = min(remaining, 10.0)
            if _port_open(self.port) and _run_sync(
                lambda: _has_live_broker(self.bootstrap, probe_timeout)  # noqa: B023
            ):
                return
            time.sleep(0.2)

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the broker: SIGTERM, up to ``timeout`` s of grace, then SIGKILL.

        Removes the temporary folder unless ``keep_workdir``.  Safe to call more than once.
        """
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._workdir is not None and not self.keep_workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)
        _live_brokers.discard(self)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- topics ---------------------------------------------------------------------------

    async def acreate_topic(
        self,
        name: str,
        partitions: int = 1,
        replication_factor: int = 1,
        *,
        configs: dict[str, str] | None = None,
        exist_ok: bool = False,
        timeout: float = 30.0,
    ) -> None:
        """Create a topic and wait until each of its partitions has a leader.

        Raises:
            aiokafka.errors.KafkaError: the broker refused (``TopicAlreadyExistsError`` unless
                ``exist_ok``).
            TimeoutError: the partitions got no leader within ``timeout`` seconds.
        """
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic
        from aiokafka.errors import TopicAlreadyExistsError, for_code

        deadline = time.monotonic() + timeout
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap, request_timeout_ms=int(timeout * 1000)
        )
        try:
            await admin.start()
            new_topic = NewTopic(name, partitions, replication_factor, topic_configs=configs or {})
            response = await admin.create_topics([new_topic], timeout_ms=int(timeout * 1000))
            for entry in response.topic_errors:
                code = entry[1]
                if code == 0 or (exist_ok and code == TopicAlreadyExistsError.errno):
                    continue
                message = entry[2] if len(entry) > 2 and entry[2] else ""
                raise for_code(code)(f"creating topic {name!r}: {message}".rstrip(": "))
            while True:
                (described,) = await admin.describe_topics([name])
                parts = described.get("partitions") or []
                if (
                    described.get("error_code") == 0
                    and parts
                    and all(p["error_code"] == 0 and p["leader"] >= 0 for p in parts)
                ):
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"topic {name!r} has no leader for each partition")
                await asyncio.sleep(0.1)
        finally:
            await admin.close()

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        replication_factor: int = 1,
        *,
        configs: dict[str, str] | None = None,
        exist_ok: bool = False,
        timeout: float = 30.0,
    ) -> None:
        """Blocking :meth:`acreate_topic` (works even where an event loop runs)."""
        _run_sync(
            lambda: self.acreate_topic(
                name,
                partitions,
                replication_factor,
                configs=configs,
                exist_ok=exist_ok,
                timeout=timeout,
            )
        )


class _PortTaken(Exception):
    """Someone bound a chosen port between choosing it and the broker binding it."""


_LOG4J_PROPERTIES = """\
# Written by tests/kafka/broker.py: everything to stdout, which goes to broker.log.
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.Target=System.out
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.org.apache.kafka.clients=WARN
"""


async def _has_live_broker(bootstrap: str, timeout: float) -> bool:
    """Whether a metadata request to ``bootstrap`` lists at least one live broker."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=max(int(timeout * 1000), 1000)
    )
    try:
        await asyncio.wait_for(admin.start(), timeout)
        cluster = await asyncio.wait_for(admin.describe_cluster(), timeout)
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await admin.close()
    return bool(cluster.get("brokers"))


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def _default_state_file(cache_dir: Path) -> Path:
    return cache_dir / "cli-broker.json"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_our_cli(pid: int) -> bool:
    """Whether ``pid`` runs this module (guards against a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return _pid_alive(pid)
    return b"tests.kafka.broker" in cmdline


def _read_state(path: Path) -> dict[str, Any] | None:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _cmd_fetch(args: argparse.Namespace) -> int:
    cache = Path(args.cache_dir).expanduser() if args.cache_dir else default_cache_dir()
    if not is_fetched(cache):
        print(f"fetching Apache Kafka {KAFKA_VERSION} jars into {cache} ...", file=sys.stderr)
    lib_dir = fetch(cache)
    jars = list(lib_dir.glob("*.jar"))
    size = sum(p.stat().st_size for p in jars)
    print(f"kafka={KAFKA_VERSION} jars={len(jars)} size={size / 2**20:.1f}MiB lib={lib_dir}")
    return 0


class _Interrupted(Exception):
    """A stop signal arrived while the broker was still starting."""


def _cmd_start(args: argparse.Namespace) -> int:
    cache = Path(args.cache_dir).expanduser() if args.cache_dir else default_cache_dir()
    state_file = Path(args.state_file) if args.state_file else _default_state_file(cache)
    state = _read_state(state_file)
    if state and _pid_alive(int(state.get("pid", 0) or 0)) and _is_our_cli(int(state["pid"])):
        print(
            f"a broker already runs (pid {state['pid']}, bootstrap={state.get('bootstrap')}); "
            f"stop it first or pass --state-file",
            file=sys.stderr,
        )
        return 1

    stopping = threading.Event()
    started = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        if not started:
            raise _Interrupted

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)

    if not is_fetched(cache):
        print(f"fetching Apache Kafka {KAFKA_VERSION} jars into {cache} ...", file=sys.stderr)
    broker = KafkaBroker(cache, startup_timeout=args.timeout, keep_workdir=args.keep)
    try:
        try:
            broker.start()
        except _Interrupted:
            print("interrupted while starting", file=sys.stderr)
            return 130
        except KafkaBrokerError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        started = True
        state_file.parent.mkdir(parents=True, exist_ok=True)
        state_file.write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "java_pid": broker.pid,
                    "bootstrap": broker.bootstrap,
                    "log": str(broker.log_path),
                }
            )
        )
        print(
            f"Kafka {KAFKA_VERSION} up in {broker.startup_seconds:.1f} s; log {broker.log_path}",
            file=sys.stderr,
        )
        print(f"bootstrap={broker.bootstrap}", flush=True)
        while not stopping.wait(0.5):
            if not broker.running:
                print(f"error: the broker died; log {broker.log_path}:", file=sys.stderr)
                print(_read_tail(broker.log_path), file=sys.stderr)
                return 1
        return 0
    finally:
        started = True  # a second signal must not interrupt the shutdown
        broker.stop()
        state = _read_state(state_file)
        if state and state.get("pid") == os.getpid():
            state_file.unlink(missing_ok=True)


def _cmd_stop(args: argparse.Namespace) -> int:
    cache = Path(args.cache_dir).expanduser() if args.cache_dir else default_cache_dir()
    state_file = Path(args.state_file) if args.state_file else _default_state_file(cache)
    state = _read_state(state_file)
    if not state:
        print("no broker started by `start` is running", file=sys.stderr)
        return 0
    pid = int(state.get("pid", 0) or 0)
    java_pid = int(state.get("java_pid", 0) or 0)
    if pid and _pid_alive(pid) and _is_our_cli(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + args.timeout + 10
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    if java_pid and _pid_alive(java_pid):
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{java_pid}/cmdline").read_bytes()
            if b"kafka.Kafka" in cmdline:
                os.kill(java_pid, signal.SIGKILL)
    state_file.unlink(missing_ok=True)
    print(f"stopped the broker at {state.get('bootstrap')}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m tests.kafka.broker``."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.kafka.broker",
        description=f"A real Apache Kafka {KAFKA_VERSION} broker on 127.0.0.1 for the tests.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--cache-dir",
        default=argparse.SUPPRESS,
        help=f"jar cache (default ${CACHE_ENV} or {default_cache_dir()})",
    )
    parser.add_argument("--cache-dir", default=None, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "fetch", parents=[common], help="fetch the broker jars into the cache (once)"
    )
    start = commands.add_parser(
        "start", parents=[common], help="run a broker in the foreground until SIGTERM or Ctrl-C"
    )
    start.add_argument("--timeout", type=float, default=60.0, help="startup timeout, s")
    start.add_argument("--keep", action="store_true", help="keep the broker's temp folder")
    start.add_argument("--state-file", help="where to record the running broker")
    stop = commands.add_parser(
        "stop", parents=[common], help="stop the broker that `start` runs elsewhere"
    )
    stop.add_argument("--timeout", type=float, default=20.0, help="grace period, s")
    stop.add_argument("--state-file", help="the state file that `start` wrote")
    args = parser.parse_args(argv)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "fetch": _cmd_fetch,
        "start": _cmd_start,
        "stop": _cmd_stop,
    }
    try:
        return handlers[args.command](args)
    except KafkaBrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
