"""`metaplug daemon --config FILE`: the node agent behind metaplug-shim (DESIGN: "Two modes, one core").

Every call runs the SAME core as thin mode, `plugin.run(env, stdin)`, on the same journal, so a container added in
one mode is checked and deleted in the other. What the daemon adds:
- one call per connection on a unix socket (0600, in a directory created 0700), protocol.py;
- per call, the shim's conflist keys override the config file's (config.merged_stdin);
- calls for different containers run concurrently (a thread per connection, reused: cni.workers), calls for the same
  container one at a time (ContainerLocks); at most maxConcurrentCalls run, the others wait (bounded by
  WAIT_TIMEOUT, then code 11), and at most WAITING_FACTOR times that many connections are accepted: the rest wait
  in the kernel's listen queue, so a burst of pods never makes the daemon grow without bound (nor its threads);
- spooled DELs (spool.py) are replayed oldest first, and before any live call for the same container; /readyz
  answers 200 only once the spool is empty, the Kubernetes caches have synced and the cluster network's STATUS is
  good;
- with a kubeconfig in its config, watch caches of this node's pods and of the NADs serve ADD (cache.py), through
  one HTTP client for the daemon's life;
- SIGTERM: stop accepting, finish the calls in flight (at most SHUTDOWN_TIMEOUT), exit 0.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import logging
import os
import select
import signal
import socket
import stat
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

from metaplug import live, plugin
from metaplug.cni import files, invoke, workers
from metaplug.cni.errors import DECODE_FAILURE, TRY_AGAIN_LATER, CniError
from metaplug.cni.skel import INTERNAL_ERROR
from metaplug.cni.version import CURRENT_VERSION
from metaplug.config import DEFAULT_STATE_DIR
from metaplug.daemon import inprocess
from metaplug.daemon.config import SHUTDOWN_TIMEOUT, WAIT_TIMEOUT, ConfigError, DaemonConfig, load, merged_stdin
from metaplug.daemon.metrics import Metrics, serve_http
from metaplug.daemon.protocol import (
    NoRequest,
    ProtocolError,
    Request,
    Response,
    encode_response,
    read_request,
    socket_reader,
)
from metaplug.daemon.spool import Record, Spool

if TYPE_CHECKING:
    from metaplug.daemon.cache import KubeCache
    from metaplug.daemon.reconciler import PodReconciler

log = logging.getLogger("metaplug.daemon")
WAITING_FACTOR = 4  # accepted connections (running + waiting) per call slot
READ_TIMEOUT = 10.0  # seconds a caller has to send its whole request
LISTEN_BACKLOG = 1024


class DaemonError(Exception):
    """The daemon cannot start (the message says why)."""


class ContainerLocks:
    """One call at a time per container ID; a lock exists only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    def acquire(self, container_id: str, timeout: float) -> bool:
        with self._guard:
            lock, users = self._locks.get(container_id, (threading.Lock(), 0))
            self._locks[container_id] = (lock, users + 1)
        if lock.acquire(timeout=max(0.0, timeout)):
            return True
        self._forget(container_id)
        return False

    def release(self, container_id: str) -> None:
        with self._guard:
            lock, _ = self._locks[container_id]
        lock.release()
        self._forget(container_id)

    def _forget(self, container_id: str) -> None:
        with self._guard:
            lock, users = self._locks[container_id]
            if users == 1:
                del self._locks[container_id]
            else:
                self._locks[container_id] = (lock, users - 1)


class Daemon:
    def __init__(self, cfg: DaemonConfig) -> None:
        self.cfg = cfg
        self.state_dirs = {str(cfg.defaults.get("stateDir") or DEFAULT_STATE_DIR)}
        self.metrics = Metrics(lambda: list(self.state_dirs))
        self.spool = Spool(cfg.spool_dir)
        self.containers = ContainerLocks()
        self.slots = threading.BoundedSemaphore(cfg.max_concurrent_calls)
        self.connections = threading.BoundedSemaphore(cfg.max_concurrent_calls * WAITING_FACTOR)
        self.stopping = threading.Event()
        self._active = 0
        self._leaders = 0  # call threads waiting for a connection (one, but for the moment of handing on)
        self._active_changed = threading.Condition()
        self._readiness = (False, "starting: spool not replayed yet")
        self._socket_id: tuple[int, int] | None = None
        self._warned_spool_dirs: set[str] = set()
        self.kube: KubeCache | None = None
        self.reconciler: PodReconciler | None = None
        self._callers = workers.Pool("metaplug-call")  # one thread per connection, reused

    # ------------------------------------------------------------------------------------------ lifecycle

    def serve(self) -> int:
        from metaplug import log as mplog

        mplog.pin(self.cfg.log_level, self.cfg.log_file)
        invoke.call_observers.append(self.metrics.observe_delegate)
        served = inprocess.register() if self.cfg.in_process_delegates else []
        listener = self._listen()
        try:
            http = serve_http(self.cfg.metrics_host, self.cfg.metrics_port, self.metrics, self.healthy, self.ready)
        except OSError as exc:
            listener.close()
            self._unlink_socket()
            where = f"{self.cfg.metrics_host}:{self.cfg.metrics_port}"
            raise DaemonError(f"cannot serve metrics on {where}: {exc}") from None
        try:
            self._start_kube()
        except DaemonError:
            listener.close()
            self._unlink_socket()
            http.shutdown()
            raise
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        # The kernel hands SIGTERM to any of our threads; CPython runs the handler in the main thread only, and a
        # main thread blocked in select() is not woken when another thread took the signal. The C-level handler
        # writes to this fd from whichever thread it runs in, so select() returns and the handler below runs.
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)

        pid = os.getpid()

        def on_signal(signum: int, _frame: Any) -> None:
            if os.getpid() != pid:
                return  # a forked child (pyroute2 forks to open netns sockets) being stopped, not the daemon
            self.stopping.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, on_signal)
        maintenance = threading.Thread(target=self._maintain, name="metaplug-spool", daemon=True)
        maintenance.start()
        log.info("metaplug daemon serving", extra={"socket": self.cfg.socket_path, "spool": self.cfg.spool_dir,
                                                    "metrics": f"{self.cfg.metrics_host}:{self.cfg.metrics_port}",
                                                    "maxConcurrentCalls": self.cfg.max_concurrent_calls,
                                                    "inProcess": served})
        try:
            self._accept_loop(listener, wake_r)
        finally:
            listener.close()  # new callers are refused now: ADD fails with 11, DEL is spooled by the shim
            self._unlink_socket()
            drained = self._drain(SHUTDOWN_TIMEOUT)
            maintenance.join(timeout=max(1.0, SHUTDOWN_TIMEOUT / 10))
            self._stop_kube()
            http.shutdown()
            signal.set_wakeup_fd(-1)
            os.close(wake_r)
            os.close(wake_w)
        log.info("metaplug daemon stopped", extra={"drained": drained})
        return 0

    def _start_kube(self) -> None:
        """With Kubernetes credentials (cache.daemon_credentials): the watch caches, and the ADDs on that API server
        served from them."""
        kubeconfig = self.cfg.defaults.get("kubeconfig")
        from metaplug.daemon.cache import KubeCache, daemon_credentials
        from metaplug.k8s import client, source

        try:
            creds = daemon_credentials(str(kubeconfig) if kubeconfig else None)
            if creds is None:
                return
            self.kube = KubeCache(creds, self.cfg.node_name, self.metrics)
        except CniError as err:
            raise DaemonError(f"kubeconfig {kubeconfig}: {err.msg}: {err.details}") from None
        client.request_observers.append(self.metrics.observe_kube_request)
        source.use_backend(self.kube)
        if self.kube.pods is not None:  # hot-plug from the pod watch (issue 12.1)
            from metaplug.daemon.reconciler import PodReconciler

            self.reconciler = PodReconciler(self.kube, self.cfg.defaults, self.state_dirs, self._turn)
            self.kube.pods.listeners.append(self.reconciler.pod_event)
            self.reconciler.start()
        self.kube.start()
        log.info("watching Kubernetes", extra={"server": self.kube.creds.server, "node": self.cfg.node_name})

    def _stop_kube(self) -> None:
        if self.kube is None:
            return
        from metaplug.k8s import client, source

        source.use_backend(None)
        self.kube.stop()
        if self.reconciler is not None:
            self.reconciler.stop()
        if self.metrics.observe_kube_request in client.request_observers:
            client.request_observers.remove(self.metrics.observe_kube_request)

    def _listen(self) -> socket.socket:
        path = self.cfg.socket_path
        directory = os.path.dirname(path)
        if not os.path.isdir(directory):
            files.make_dirs(directory)  # 0700 each, parents too, whatever the umask
        self.spool.create()
        with contextlib.suppress(FileNotFoundError):
            mode = os.lstat(path).st_mode
            if not stat.S_ISSOCK(mode):
                raise DaemonError(f"{path} exists and is not a socket; refusing to replace it")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
            except OSError:
                os.unlink(path)  # left behind by a daemon that is gone
            else:
                raise DaemonError(f"another metaplug daemon is serving {path}")
            finally:
                probe.close()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket is 0600 from its first instant
        try:
            listener.bind(path)
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        listener.listen(LISTEN_BACKLOG)
        st = os.stat(path)
        self._socket_id = (st.st_dev, st.st_ino)
        return listener

    def _unlink_socket(self) -> None:
        """Remove our socket, never the one a newer daemon bound meanwhile."""
        with contextlib.suppress(FileNotFoundError):
            st = os.stat(self.cfg.socket_path)
            if (st.st_dev, st.st_ino) == self._socket_id:
                os.unlink(self.cfg.socket_path)

    def _accept_loop(self, listener: socket.socket, wake: int) -> None:
        """Wait for SIGTERM (or SIGINT); the calls meanwhile are accepted by the call threads themselves (`_lead`).
        Then make the one waiting for a connection leave, so that `listener` can be closed under nobody."""
        listener.setblocking(False)
        stop_r, stop_w = os.pipe()  # readable once written, and never read: every leader sees it
        try:
            if not self._hand_on(listener, stop_r):
                raise DaemonError("cannot start a thread to take calls")
            while not self.stopping.is_set():
                ready, _, _ = select.select([wake], [], [], 1.0)
                if ready:
                    os.read(wake, 64)
            os.write(stop_w, b"x")
            with self._active_changed:
                while self._leaders:
                    self._active_changed.wait()
        finally:
            os.close(stop_r)
            os.close(stop_w)

    def _hand_on(self, listener: socket.socket, stop: int) -> bool:
        """Another call thread (an idle one, else a new one) waits for the next connection. False when no thread
        could be started (the pids limit of the daemon's cgroup, say): then nobody waits."""
        with self._active_changed:
            self._leaders += 1
        try:
            # A reused thread (cni.workers: starting one cost ~0.2 ms per call, more on busy cores), serving its call
            # in a fresh context as a new thread would (nothing a call sets leaks into the next).
            self._callers.submit(functools.partial(contextvars.Context().run, self._lead, listener, stop))
        except RuntimeError as exc:  # threading's "can't start new thread"
            with self._active_changed:
                self._leaders -= 1
                self._active_changed.notify_all()
            log.error("cannot start a call thread; calls are taken one after another until one can be",
                      extra={"error": str(exc)})
            return False
        return True

    def _lead(self, listener: socket.socket, stop: int) -> None:
        """Leader/followers: one call thread at a time waits for a connection (at most `connections` accepted, the
        rest wait in the kernel's listen queue). Having accepted one, it hands the waiting on and serves that call
        itself, so a call starts without another thread being woken for it first (waking an idle CPU's thread cost
        ~0.3-1 ms of a paced call on a VM). When the waiting could not be handed on, this thread waits again after
        its call."""
        while True:
            conn = self._next_connection(listener, stop)
            if conn is None:
                return
            handed = self._hand_on(listener, stop)
            self._connection(conn)
            if handed:
                return
            with self._active_changed:  # checked under the lock the shutdown waits on: never a leader after it
                if self.stopping.is_set():
                    return
                self._leaders += 1

    def _next_connection(self, listener: socket.socket, stop: int) -> socket.socket | None:
        """As the leader (counted in `_leaders` by whoever made this thread one): the next connection, counted as
        active, or None once the daemon stops."""
        conn: socket.socket | None = None
        try:
            waiting = select.poll()
            waiting.register(listener, select.POLLIN)
            waiting.register(stop, select.POLLIN)
            while conn is None and not self.stopping.is_set():
                if not self.connections.acquire(timeout=0.5):
                    continue  # at the limit
                ready = {fd for fd, _ in waiting.poll()}
                if stop in ready:
                    self.connections.release()
                    break
                try:
                    conn, _ = listener.accept()
                except BlockingIOError:
                    self.connections.release()
                except OSError as exc:
                    self.connections.release()
                    log.warning("accept failed", extra={"error": str(exc)})
                    time.sleep(0.1)  # EMFILE, ENOBUFS: not in a busy loop
            if conn is not None:
                with self._active_changed:
                    self._active += 1
        finally:
            with self._active_changed:
                self._leaders -= 1
                self._active_changed.notify_all()
        return conn

    def _drain(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._active_changed:
            while self._active:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    log.error("calls still running at shutdown; their journals let the next DEL clean up",
                              extra={"calls": self._active})
                    return False
                self._active_changed.wait(remaining)
        return True

    # ------------------------------------------------------------------------------------------ probes

    def healthy(self) -> tuple[bool, str]:
        return (False, "shutting down") if self.stopping.is_set() else (True, "ok")

    def ready(self) -> tuple[bool, str]:
        if self.stopping.is_set():
            return False, "shutting down"
        return self._readiness

    # ------------------------------------------------------------------------------------------ calls

    def _connection(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(READ_TIMEOUT)
            try:
                request = read_request(socket_reader(conn))
            except NoRequest:
                return
            except (ProtocolError, OSError) as exc:
                log.warning("bad request on the socket", extra={"error": str(exc)})
                return
            conn.settimeout(None)
            try:
                response = self.call(request)
            except Exception as exc:  # a bug here must still answer the runtime with a CNI error (cni.md 32)
                log.exception("daemon failed to serve a call")
                response = self._error(request, CniError(INTERNAL_ERROR, "internal error in metaplug daemon",
                                                         f"{type(exc).__name__}: {exc}"))
            try:
                conn.sendall(encode_response(response))
            except OSError as exc:
                log.warning("caller left before the answer", extra={
                    "verb": request.env.get("CNI_COMMAND"), "container": request.env.get("CNI_CONTAINERID"),
                    "error": str(exc)})
        finally:
            conn.close()
            self.connections.release()
            with self._active_changed:
                self._active -= 1
                self._active_changed.notify_all()

    def call(self, request: Request) -> Response:
        """One live call: its container's spooled DELs first, then the call itself."""
        started = time.monotonic()
        verb = request.env.get("CNI_COMMAND", "")
        container_id = request.env.get("CNI_CONTAINERID", "")
        with self._turn(container_id) as ok:
            if not ok:
                self.metrics.observe_call(verb, TRY_AGAIN_LATER, time.monotonic() - started, "busy")
                return self._busy(request)
            if container_id:
                for record in self.spool.pending_for(container_id):
                    self._replay_locked(record)
            response = self._run(request)
        self.metrics.observe_call(verb, _error_code(response), time.monotonic() - started)
        return response

    @contextlib.contextmanager
    def _turn(self, container_id: str) -> Iterator[bool]:
        """Wait (bounded) for the container and a call slot; yields False when neither came in time."""
        deadline = time.monotonic() + WAIT_TIMEOUT
        self.metrics.waiting.inc()
        try:
            have_container = not container_id or self.containers.acquire(container_id, WAIT_TIMEOUT)
            have_slot = have_container and self.slots.acquire(timeout=max(0.0, deadline - time.monotonic()))
        finally:
            self.metrics.waiting.dec()
        if not have_slot:
            if have_container and container_id:
                self.containers.release(container_id)
            yield False
            return
        self.metrics.in_flight.inc()
        try:
            yield True
        finally:
            self.metrics.in_flight.dec()
            self.slots.release()
            if container_id:
                self.containers.release(container_id)

    def _run(self, request: Request) -> Response:
        if live.OPERATION_VAR in request.env:
            return self._live_change(request)
        stdin, conf = merged_stdin(self.cfg.defaults, request.stdin)
        self._note(conf)
        # In a copy of the context: the call's log context (log.configure) and its trace context (cni.trace, which
        # dispatch takes from the forwarded TRACEPARENT, TRACESTATE and BAGGAGE for every delegate) end with the call.
        status, out, err = contextvars.copy_context().run(plugin.run, request.env, stdin)
        return Response(status, out.encode(), err.encode())

    def _live_change(self, request: Request) -> Response:
        """`metaplug attach|detach|set-bandwidth` through the daemon (protocol.py: a live-change request): the same
        core as in-process, the daemon's config under the request's `conf`, under this container's turn (call)."""
        try:
            operation = json.loads(request.stdin)
            if not isinstance(operation, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            err = CniError(DECODE_FAILURE, "live-change request is not a JSON object", str(exc))
            return Response(1, json.dumps(err.to_dict(CURRENT_VERSION)).encode(), b"")
        _, conf = merged_stdin(self.cfg.defaults, json.dumps(operation.get("conf") or {}).encode())
        self._note(conf)
        operation["conf"] = conf
        status, doc = contextvars.copy_context().run(live.answer, cast("live.Operation", operation))
        return Response(status, json.dumps(doc).encode(), b"")

    def _note(self, conf: dict[str, Any]) -> None:
        state_dir = conf.get("stateDir")
        if isinstance(state_dir, str) and state_dir.startswith("/"):
            self.state_dirs.add(state_dir)
        spool_dir = conf.get("spoolDir")
        if isinstance(spool_dir, str) and spool_dir != self.cfg.spool_dir and spool_dir not in self._warned_spool_dirs:
            self._warned_spool_dirs.add(spool_dir)
            log.warning("the shim's conflist names a spoolDir this daemon does not replay; set the same spoolDir in "
                        "the daemon's config", extra={"spoolDir": spool_dir, "replayed": self.cfg.spool_dir})

    def _busy(self, request: Request) -> Response:
        return self._error(request, CniError(
            TRY_AGAIN_LATER, "metaplug daemon busy, try again later",
            f"no free call slot within {WAIT_TIMEOUT:g} s (maxConcurrentCalls {self.cfg.max_concurrent_calls})"))

    @staticmethod
    def _error(request: Request, err: CniError) -> Response:
        """`err` as the call's answer, in the request's cniVersion when it has one."""
        try:
            version = json.loads(request.stdin).get("cniVersion") or CURRENT_VERSION
        except (ValueError, AttributeError):
            version = CURRENT_VERSION
        return Response(1, (json.dumps(err.to_dict(str(version))) + "\n").encode(), b"")

    # ------------------------------------------------------------------------------------------ spool + readiness

    def _replay(self, record: Record) -> bool:
        with self._turn(record.container_id) as ok:
            return ok and self._replay_locked(record)

    def _replay_locked(self, record: Record) -> bool:
        """Run one spooled DEL (the caller holds its container); True when it is done and removed."""
        if not self.spool.exists(record):
            return True  # a live call for the container replayed it first
        response = self._run(record.request)
        if response.status != 0:
            self.metrics.spool_replays.labels("failed").inc()
            log.error("spooled DEL failed; retrying, the daemon stays not ready", extra={
                "path": record.path, "container": record.container_id, "answer": response.stdout.decode()[:400]})
            return False
        self.spool.remove(record)
        self.metrics.spool_replays.labels("replayed").inc()
        log.info("spooled DEL replayed", extra={"path": record.path, "container": record.container_id})
        return True

    def _maintain(self) -> None:
        """Replay the spool and re-check readiness, until shutdown."""
        while not self.stopping.is_set():
            before = self._readiness
            try:
                self._readiness = self._check()
            except Exception as exc:  # never let the readiness thread die
                log.exception("readiness check failed")
                self._readiness = (False, f"readiness check failed: {exc}")
            if self._readiness != before:  # each change of readiness or of its reason, once
                ready, why = self._readiness
                (log.info if ready else log.warning)("ready" if ready else "not ready", extra={"reason": why})
            self.metrics.ready.set(1 if self._readiness[0] else 0)
            self.stopping.wait(5.0 if self._readiness[0] else 1.0)

    def _check(self) -> tuple[bool, str]:
        failed = [r for r in self.spool.pending() if not self._replay(r)]
        self.metrics.spool_pending.set(len(self.spool.pending()))
        if failed:
            return False, f"{len(failed)} spooled DELs not replayed yet (retrying; see the log)"
        if self.kube is not None:
            synced, why = self.kube.synced()
            if not synced:
                return False, why
        ok, why = self._cluster_status()
        return (True, "ready") if ok else (False, f"cluster network not ready: {why}")

    def _cluster_status(self) -> tuple[bool, str]:
        """STATUS (cni.md 13) of the cluster network a call would use (readiness.py: the shim's conflist over the
        daemon's config, else the network install wraps); the delegates are searched in binDir, then in the daemon's
        own CNI_PATH."""
        from metaplug.daemon.readiness import Unreadable, cluster_conf

        try:
            found = cluster_conf(self.cfg)
        except Unreadable as exc:
            return False, str(exc)
        if found.conf is None:
            return True, found.source
        env = {"CNI_COMMAND": "STATUS", "CNI_PATH": os.environ.get("CNI_PATH", "")}
        status, out, _ = contextvars.copy_context().run(plugin.run, env, json.dumps(found.conf).encode())
        if status == 0:
            return True, "ok"
        try:
            doc = json.loads(out)
            why = f"{doc.get('msg')}: {doc.get('details', '')}"
        except ValueError:
            why = out.strip()
        return False, f"{why} (from {found.source})"


def _error_code(response: Response) -> int | None:
    if response.status == 0:
        return None
    try:
        code = json.loads(response.stdout).get("code")
    except (ValueError, AttributeError):
        return response.status
    return code if isinstance(code, int) else response.status


# ------------------------------------------------------------------------------------------ CLI


def run_cli(config_path: str) -> int:
    """`metaplug daemon --config FILE` (cli.py)."""
    import sys

    try:
        return Daemon(load(config_path)).serve()
    except (ConfigError, DaemonError) as exc:
        print(f"metaplug daemon: {exc}", file=sys.stderr)
        return 2
