"""Run untrusted Python programs (written by the model we train) safely and fast.

    from minirlaif.sandbox import run_program, run_programs
    r = run_program("import numpy as np\\nprint(np.arange(5).sum())")
    r.status, r.stdout            # ('ok', '10\\n')
    results = run_programs(codes)  # parallel, input order

A leaf module: it imports nothing from minirlaif (its helper `_sandbox_worker.py` is run as a
script, never imported, and loads `_sandbox_limits.py` beside it), so the three files can be copied
into another project unchanged.

How it works
------------
A *fork server* (`_sandbox_worker.py`) is started once per worker slot and kept for the life of
this process. It runs inside fresh Linux namespaces (`unshare --net --mount --pid --ipc`), imports
numpy and common stdlib modules once, then forks one child per program. The child drops to a
fresh random uid, applies rlimits, chdirs to an empty /tmp/work and runs the code as __main__.
Startup and imports are paid once per server instead of once per program (9-23x the throughput
of `subprocess.run([python, file])` on a loaded 2-vCPU VM, see bench/README_sandbox.md).

Isolation model (root + `unshare` available, the normal case; `isolation_info()` reports it)
-----------------------------------------------------------------------------------------
Protects against, for each program:
  * our process: the code runs in another process, in another PID namespace, under a uid that
    owns nothing; it cannot signal, ptrace or even see (hidepid=2) the host or the server.
  * network and host IPC: own network namespace with only a (down) loopback: no host, LAN or
    internet access, not even 127.0.0.1 listeners of the host; own IPC namespace (no SysV IPC); a
    seccomp filter refuses socket(AF_UNIX) and datagram socketpairs, so no host service's unix
    socket file can be reached (stream socketpairs, pipes and multiprocessing still work).
  * the kernel's shared state: the filter also refuses kernel keyrings (add_key, keyctl: keys
    outlive the program and are shared per uid), new namespaces (unshare, setns, clone flags: a user
    namespace would let it mount its own tmpfs), mount, bpf, perf, userfaultfd and io_uring.
  * filesystem: every mount is read-only in its namespace; /tmp and /dev/shm are private tmpfs,
    empty again after each program (a program that left anything there gets them replaced by fresh
    mounts, however deep or large what it left); /root and /home are hidden (the Python install
    is re-exposed). The only writable places are /tmp (work dir = cwd = HOME) and /dev/shm.
  * secrets: the server's environment is built from scratch (PATH, HOME, LANG, PYTHONHASHSEED=0,
    thread counts = 1); the host's environment (API keys) is never inherited, nor readable via /proc.
  * memory, as a whole: the fork server lives in a memory cgroup of its own, and before each program
    its limit is set to what it holds plus memory_mb. So **memory_mb bounds everything the program
    makes the host hold**: its processes' memory and its children's, page tables, files in /tmp and
    /dev/shm, memfds, pipe buffers (the preloaded interpreter it shares copy-on-write with the server
    is not counted again). /tmp and /dev/shm are also capped at 512 MB each. Per worker the host holds
    at most the server (~42 MB resident with numpy preloaded) + memory_mb.
  * other resources: wall-clock timeout (kill), RLIMIT_CPU, RLIMIT_FSIZE, RLIMIT_NPROC (per fresh
    uid: fork bombs stop), RLIMIT_NOFILE; output truncated to max_output_bytes (head + tail kept).
  * leftovers: after the program's main process ends, everything else it started (daemons,
    setsid-ed grandchildren, fork bombs) is SIGKILLed; each program gets a clean /tmp and uid.
  * forged results: the status is decided by the server from what it observes: its own clock (timeout),
    the kernel's CPU accounting (RLIMIT_CPU), the cgroup's OOM/limit counters (memory_limit), the wait
    status (signals, exit code) and the compile result, which the harness sends on a pipe it closes
    before the program's first line runs. The program cannot write to that pipe, cannot make the caller
    raise (anything that goes wrong in the server after the program started makes that program's
    result `killed` / "SandboxError" and the server is replaced), and a nonzero SystemExit code never
    reads as 0. `error_type` is what the program's own process reports: a label, never a status.
What "ok" means: the program's process exited with status 0 and nothing above stopped it. The exit
status is the program's own, exactly as for `python main.py`: code that calls os._exit(0) (say, in an
except clause or an atexit hook), or that rewrites its interpreter's memory, chooses it. No sandbox
can take that from a process; judge such code by reading it.
Does NOT protect against:
  * kernel exploits (the seccomp filter is a deny list, not a VM): this is a sandbox for buggy and
    reward-hacking code, not for a determined attacker with a kernel 0-day.
  * reading world-readable files (the repo, /etc, site-packages) -- keep secrets out of them; and
    named pipes (FIFOs) the host made world-writable.
  * CPU: concurrent programs compete for the cores, and timeouts are wall-clock: a heavily loaded
    machine can turn a slow program into a timeout.
  * side channels between concurrent programs (they run in different servers' namespaces and share
    nothing writable, but they do share the kernel, CPU caches and load).
Degraded modes (each is said once, in a RuntimeWarning; REQUIRE_ISOLATION = True raises instead):
  * no memory cgroup (not root, or no cgroup the process can extend): memory is limited per process
    by RLIMIT_AS (memory_mb on top of the pre-warmed interpreter), files in /tmp and /dev/shm are not
    counted, and memory_limit comes from the program's own MemoryError.
  * no seccomp filter (an architecture other than x86_64/aarch64): keyrings, unix sockets and new
    namespaces are open to the program.
  * no Linux namespaces (not root, no `unshare`, or e.g. a container without CAP_SYS_ADMIN): the
    same fork server runs directly on the host. It still applies rlimits, the cgroup and the filter
    where it can, the scrubbed environment, a temp dir that is removed afterwards, and kills leftovers
    (it acts as subreaper), and as root still gives each program a fresh uid. But there is no network
    or filesystem isolation, and without root the program can reach same-user processes and their
    /proc/*/environ.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import selectors
import shutil
import subprocess
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

STATUSES = ("ok", "syntax_error", "runtime_error", "timeout", "memory_limit", "killed")

# Modules each fork server imports once (missing ones are skipped). Add e.g. "torch" or
# "transformers" here *before the first run* if your programs import them: the import is then paid
# once per server instead of once per program (memory_mb is granted on top of what is preloaded).
PRELOAD: tuple[str, ...] = (
    "numpy", "numpy.random", "json", "re", "math", "cmath", "random", "collections", "itertools", "functools",
    "operator", "string", "textwrap", "datetime", "time", "calendar", "typing", "dataclasses", "enum",
    "heapq", "bisect", "copy", "statistics", "fractions", "decimal", "csv", "io", "hashlib", "base64",
    "struct", "pathlib", "glob", "shutil", "tempfile", "subprocess", "argparse", "pprint", "uuid",
    "logging", "contextlib", "inspect", "socket", "urllib.request", "urllib.parse", "http.client",
    "html", "fnmatch", "difflib", "binascii", "zlib", "posixpath",  # the rest of the built-in benchmark
)
MAX_OUTPUT_BYTES = 10_000  # per stream; head (4/5) + tail (1/5) kept, a marker says how much was cut
MAX_FILE_MB = 16           # RLIMIT_FSIZE: largest file a program may write
MAX_PROCS = 32             # RLIMIT_NPROC for the program's uid (processes + threads)
WITHOUT: tuple[str, ...] = ()  # "cgroup", "seccomp": run without them, as where the kernel lacks them (tests)
REQUIRE_ISOLATION = False  # True: raise instead of running without namespaces, the cgroup or the filter
MAX_TIMEOUT_S = 24 * 3600.0  # a day: beyond that a timeout is a typo (and RLIMIT_CPU overflows)
_SERVER_START_TIMEOUT_S = 60.0
_GUARD_S = 30.0            # the server enforces timeouts; this only catches a hung server

_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sandbox_worker.py")


@dataclass
class SandboxResult:
    """How one program ended. `stdout`/`stderr` are truncated to max_output_bytes (with a marker)."""

    status: str             # one of STATUSES
    exit_code: int | None   # process exit code; -N if killed by signal N; None on timeout
    error_type: str | None  # "NameError", "SyntaxError", "SystemExit", "SIGSEGV", ...; None if ok
    stdout: str
    stderr: str
    duration_s: float       # wall clock of the program's process

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# ----------------------------------------------------------------------------------------------
# public API


def run_program(code: str, timeout_s: float = 5.0, memory_mb: int = 1024, stdin: str = "", *,
                max_output_bytes: int = MAX_OUTPUT_BYTES, max_file_mb: int = MAX_FILE_MB,
                max_procs: int = MAX_PROCS) -> SandboxResult:
    """Run `code` as __main__ in the sandbox (fresh process, temp dir, limits) and report how it ended.

    Never raises for anything the program does; raises RuntimeError only if the sandbox itself
    cannot be set up (then no result would be trustworthy).
    """
    request = _request(code, timeout_s, memory_mb, stdin, max_output_bytes, max_file_mb, max_procs)
    server = _POOL.acquire()
    try:
        return server.run(request)
    finally:
        _POOL.release(server)


def run_programs(codes: list[str], workers: int | None = None, timeout_s: float = 5.0,
                 memory_mb: int = 1024, progress: bool = False, *, stdin: str = "",
                 max_output_bytes: int = MAX_OUTPUT_BYTES, max_file_mb: int = MAX_FILE_MB,
                 max_procs: int = MAX_PROCS) -> list[SandboxResult]:
    """Run many programs in parallel (`workers` fork servers, default os.cpu_count()); input order."""
    codes = list(codes)
    for code in codes:  # validate everything before starting anything
        _request(code, timeout_s, memory_mb, stdin, max_output_bytes, max_file_mb, max_procs)
    if not codes:
        return []
    workers = max(1, min(workers or os.cpu_count() or 1, len(codes)))
    kwargs = dict(timeout_s=timeout_s, memory_mb=memory_mb, stdin=stdin, max_output_bytes=max_output_bytes,
                  max_file_mb=max_file_mb, max_procs=max_procs)
    start = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox")
    try:
        futures = [pool.submit(run_program, code, **kwargs) for code in codes]
        if progress:
            tty = sys.stderr.isatty()  # in a log file: whole lines, not carriage-return redraws
            for done, _ in enumerate(as_completed(futures), 1):
                if done % (50 if tty else 500) == 0 or done == len(codes):
                    rate = done / max(time.monotonic() - start, 1e-9)
                    print(f"{chr(13) if tty else ''}[sandbox] {done}/{len(codes)} programs ({rate:.1f}/s)",
                          end="" if tty else "\n", file=sys.stderr, flush=True)
            if tty:
                print(file=sys.stderr)
        return [f.result() for f in futures]
    finally:
        # on Ctrl-C or an error, drop the queued programs instead of running thousands more
        pool.shutdown(wait=True, cancel_futures=True)


def isolation_info() -> dict:
    """What the sandbox actually achieved on this machine (asks a live fork server).

    Keys: namespaces (bool: the full model above), network, private_tmp, readonly_root, hidepid,
    uid_drop, python_readable (bools), hidden (dirs hidden), unreadable_paths (sys.path entries a
    dropped uid cannot read), preloaded (modules), threads (server threads; 1 expected, forking needs it).
    """
    server = _POOL.acquire()
    try:
        return dict(server.facts)
    finally:
        _POOL.release(server)


def shutdown() -> None:
    """Stop the idle fork servers (they restart on demand). Called automatically at exit."""
    _POOL.close_idle()


# ----------------------------------------------------------------------------------------------
# host side of the fork servers


def _request(code: str, timeout_s: float, memory_mb: int, stdin: str, max_output_bytes: int,
             max_file_mb: int, max_procs: int) -> dict:
    if not isinstance(code, str):
        raise TypeError(f"code must be a str, got {type(code).__name__}")
    if not isinstance(stdin, str):
        raise TypeError(f"stdin must be a str, got {type(stdin).__name__}")
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)):
        raise TypeError(f"timeout_s must be a number, got {type(timeout_s).__name__}")
    if not (math.isfinite(timeout_s) and 0 < timeout_s <= MAX_TIMEOUT_S):
        raise ValueError(f"timeout_s must be a finite number in (0, {MAX_TIMEOUT_S:g}], got {timeout_s!r}")
    for name, value in (("memory_mb", memory_mb), ("max_file_mb", max_file_mb), ("max_procs", max_procs),
                        ("max_output_bytes", max_output_bytes)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if not 0 < value < 2**40:
            raise ValueError(f"{name} must be > 0, got {value!r}")
    return {"code": code, "stdin": stdin, "timeout_s": float(timeout_s), "memory_mb": memory_mb,
            "max_output_bytes": max(max_output_bytes, 100), "max_file_mb": max_file_mb, "max_procs": max_procs}


def _server_env() -> dict[str, str]:
    """The fork server's (and so every program's) environment, built from scratch: no host secrets."""
    env = {
        "PATH": os.pathsep.join([os.path.dirname(sys.executable), "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1",
        # one thread per library: the server must stay single-threaded to fork safely, and parallelism
        # comes from running many programs at once
        "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
        "NUMEXPR_NUM_THREADS": "1", "VECLIB_MAXIMUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",  # there is no network: fail fast instead of retrying
    }
    if os.environ.get("PYTHONPATH"):  # a search path, not a secret; needed if numpy lives there
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def _namespace_problem() -> str | None:
    """Why namespace mode cannot work here, or None if it is worth trying."""
    if not sys.platform.startswith("linux"):
        return f"not Linux ({sys.platform})"
    if os.geteuid() != 0:
        return "not running as root"
    if shutil.which("unshare") is None:
        return "`unshare` (util-linux) not found"
    return None


class _Server:
    """One fork server process and its JSON-lines pipe. Used by one thread at a time."""

    started = 0  # servers this process started (names their cgroups)

    def __init__(self, namespaces: bool) -> None:
        host_ns = ",".join(f"{k}:{os.readlink(f'/proc/self/ns/{k}').split(':', 1)[1]}"
                           for k in ("net", "ipc") if os.path.exists(f"/proc/self/ns/{k}"))
        _Server.started += 1
        cgroup_name = f"minirlaif-sandbox-{os.getpid()}-{_Server.started}"
        cmd = [sys.executable, _WORKER, "--preload", ",".join(PRELOAD), "--host-ns", host_ns,
               "--cgroup-name", cgroup_name, "--without", ",".join(WITHOUT)]
        if namespaces:
            # --fork: the server is PID 1 of the new PID namespace; when it dies, the kernel kills
            # everything inside. --kill-child: if unshare itself is killed, the server dies too.
            cmd = [shutil.which("unshare") or "unshare", "--net", "--mount", "--pid", "--ipc", "--fork",
                   "--kill-child", "--mount-proc", "--", *cmd, "--namespaces"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_server_env(),
                                     cwd="/", close_fds=True, start_new_session=True)  # no terminal ^C
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.proc.stdout, selectors.EVENT_READ)
        self.dead = False
        try:
            self.facts: dict = self._read(_SERVER_START_TIMEOUT_S)["hello"]
        except Exception:
            self.close()
            raise

    def _read(self, timeout_s: float) -> dict:
        if not self.selector.select(timeout_s):
            raise TimeoutError(f"fork server did not answer within {timeout_s:.0f} s")
        line = self.proc.stdout.readline()
        if not line:
            try:
                code = self.proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                code = None
            raise EOFError(f"fork server exited (code {code})")
        return json.loads(line)

    def run(self, request: dict) -> SandboxResult:
        start = time.monotonic()
        try:
            self.proc.stdin.write(json.dumps(request).encode() + b"\n")
            self.proc.stdin.flush()
            reply = self._read(request["timeout_s"] + _GUARD_S)
        except (OSError, EOFError, TimeoutError, ValueError) as e:
            # The server died or hung (fallback mode: the program may kill it). The program cannot
            # have survived it; report that and let the pool start a fresh server.
            self.close()
            return SandboxResult("killed", None, None, "", f"[sandbox] fork server lost: {e}",
                                 time.monotonic() - start)
        except BaseException:
            # Interrupted (KeyboardInterrupt in the caller) between request and reply: the reply is
            # still on its way, and reading it as the next program's would shift every later result.
            self.close(kill=True)
            raise
        if reply.get("retire"):
            self.dead = True  # the server exits after this reply; the pool starts a fresh one
        if "setup_error" in reply:
            raise RuntimeError(f"sandbox could not set up the program's process:\n{reply['setup_error']}")
        return SandboxResult(reply["status"], reply["exit_code"], reply["error_type"], reply["stdout"],
                             reply["stderr"], reply["duration_s"])

    def close(self, kill: bool = False) -> None:
        """Ask the server to exit (EOF), then make sure it did; `kill`: do not wait for its program."""
        self.dead = True
        try:
            if kill:
                self.proc.kill()
            self.proc.stdin.close()
            self.proc.wait(timeout=2)
        except Exception:  # noqa: BLE001
            self.proc.kill()  # unshare --kill-child takes the server (and its namespace) with it
            self.proc.wait()
        finally:
            self.proc.stdout.close()
            self.selector.close()
            cgroup = getattr(self, "facts", {}).get("cgroup_path")
            for _ in range(200 if cgroup else 0):  # a killed server may take a moment to leave it
                try:
                    os.rmdir(cgroup)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)


class _Pool:
    """Idle fork servers of this process, reused across calls; grows to the largest parallelism used."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle: list[_Server] = []
        self.pid = os.getpid()
        self.namespaces: bool | None = None  # None: not tried yet
        self.warned_unreadable = False
        self.warned_limits = False

    def _check_fork(self) -> None:
        if os.getpid() != self.pid:  # we are a forked copy: the servers belong to our parent
            self.idle, self.pid = [], os.getpid()

    def acquire(self) -> _Server:
        with self.lock:
            self._check_fork()
            if self.idle:
                return self.idle.pop()
        return self._start()

    def release(self, server: _Server) -> None:
        with self.lock:
            self._check_fork()
            if not server.dead:
                self.idle.append(server)
                return
        server.close()

    def close_idle(self) -> None:
        with self.lock:
            servers, self.idle = self.idle, []
        for server in servers:
            server.close()

    def _start(self) -> _Server:
        server = self._start_server()
        missing = [f"{what} ({why})" for what, ok, why in (
            ("a memory cgroup per program", server.facts.get("cgroup"), server.facts.get("cgroup_problem")),
            ("the seccomp filter", server.facts.get("seccomp"), "not supported on this machine"))
            if not ok]
        if missing and REQUIRE_ISOLATION:
            server.close()
            raise RuntimeError(f"sandbox isolation unavailable: no {' and no '.join(missing)}")
        if missing:
            with self.lock:
                first, self.warned_limits = not self.warned_limits, True
            if first:
                warnings.warn(f"minirlaif.sandbox: running without {' and without '.join(missing)}; what "
                              "that leaves open is listed in the minirlaif.sandbox docstring", RuntimeWarning,
                              stacklevel=4)
        if not server.facts.get("python_readable", True):
            with self.lock:
                first, self.warned_unreadable = not self.warned_unreadable, True
            if first:
                warnings.warn(f"minirlaif.sandbox: Python paths {server.facts['unreadable_paths']} are not readable "
                              "by other users, and sandboxed programs run as an unprivileged uid: modules there "
                              "import only if preloaded. Make them world-readable (chmod o+rx) or extend PRELOAD.",
                              RuntimeWarning, stacklevel=4)
        return server

    def _start_server(self) -> _Server:
        if self.namespaces is False:
            return _Server(namespaces=False)
        problem = _namespace_problem()
        if problem is None:
            try:
                server = _Server(namespaces=True)
                if server.facts.get("namespaces"):
                    self.namespaces = True
                    return server
                server.close()
                problem = f"namespaces incomplete: {server.facts}"
            except Exception as e:  # noqa: BLE001
                if self.namespaces:  # it worked before: a real failure, do not silently degrade
                    raise
                problem = f"unshare failed ({e})"
        if REQUIRE_ISOLATION:
            raise RuntimeError(f"sandbox isolation unavailable: {problem}")
        with self.lock:
            first = self.namespaces is None
            self.namespaces = False
        if first:
            warnings.warn(f"minirlaif.sandbox: Linux namespaces unavailable ({problem}); running programs "
                          "WITHOUT network/filesystem isolation (only rlimits, scrubbed env, temp dir)",
                          RuntimeWarning, stacklevel=5)
        return _Server(namespaces=False)


_POOL = _Pool()
atexit.register(shutdown)
