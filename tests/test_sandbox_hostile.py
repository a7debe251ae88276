"""minirlaif.sandbox against hostile programs.

Every case goes through `hostile.run`, which checks, besides the expected status:
  * the call returned within timeout_s + MARGIN_S,
  * no process is left in the fork servers' PID namespaces (and none carries the test's marker),
  * the filesystem outside the sandbox is unchanged: tmp_path (with a canary file) byte-identical,
    the sandbox's own source files unchanged, and no file named with the marker anywhere we watch.
"""

import hashlib
import os
import resource
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest

from minirlaif import sandbox
from minirlaif.sandbox import SandboxResult, run_program

REPO = Path(__file__).resolve().parents[1]
OWN_FILES = [REPO / "minirlaif" / "sandbox.py", REPO / "minirlaif" / "_sandbox_worker.py",
             REPO / "minirlaif" / "_sandbox_limits.py",
             REPO / "tests" / "test_sandbox.py", Path(__file__).resolve()]
MARGIN_S = 2.0  # a loaded 2-core CI box; the sandbox itself adds ~10 ms


@lru_cache(maxsize=None)
def _isolated() -> bool:
    return bool(sandbox.isolation_info()["namespaces"])


# ----------------------------------------------------------------------------------------------
# helpers: processes and filesystem as seen from the host


def _server_namespaces() -> list[tuple[int, str]]:
    """(host pid, PID-namespace id) of each idle fork server of this test process."""
    out = []
    for server in list(sandbox._POOL.idle):
        launcher = server.proc.pid  # `unshare`; the server is its only child
        try:
            children = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
            for pid in map(int, children):
                out.append((pid, os.readlink(f"/proc/{pid}/ns/pid")))
        except OSError:
            pass
    return out


def _leftover_processes(marker: str) -> list[str]:
    """Processes inside our servers' namespaces (other than the servers) or with `marker` in argv."""
    servers = _server_namespaces()
    server_pids = {pid for pid, _ in servers}
    namespaces = {ns for _, ns in servers}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in server_pids or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ns = os.readlink(entry / "ns" / "pid")
        except OSError:
            continue  # exited meanwhile
        if ns in namespaces or marker in cmdline:
            found.append(f"{entry.name}: {cmdline[:120]}")
    return found


def _snapshot(root: Path) -> dict[str, tuple[int, bytes | str]]:
    """path -> (mode, content hash or link target) for everything under root."""
    snap = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            if p.is_symlink():
                snap[str(p)] = (st.st_mode, os.readlink(p))
            elif p.is_file():
                snap[str(p)] = (st.st_mode, hashlib.sha256(p.read_bytes()).digest())
            else:
                snap[str(p)] = (st.st_mode, b"")
    return snap


def _files_named(marker: str) -> list[str]:
    """Files whose name contains marker in the places a program might try to write (host view)."""
    found = []
    for base in (REPO, Path.home(), Path("/tmp"), Path("/dev/shm"), Path("/var/tmp")):
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if d not in (".venv", ".git", "node_modules", "pytest-of-root")]
            if dirpath.count(os.sep) - str(base).count(os.sep) >= 2:
                dirnames[:] = []  # marker files are written at most one level deep
            found += [os.path.join(dirpath, n) for n in filenames + dirnames if marker in n]
    return found


@dataclass
class Hostile:
    tmp_path: Path
    marker: str
    canary: Path

    def run(self, code: str, expect: str | tuple[str, ...], timeout_s: float = 2.0, **kw) -> SandboxResult:
        expect = (expect,) if isinstance(expect, str) else expect
        start = time.monotonic()
        r = run_program(code, timeout_s=timeout_s, **kw)
        elapsed = time.monotonic() - start
        assert r.status in expect, f"{r.status} not in {expect}: {r}"
        assert elapsed < timeout_s + MARGIN_S, f"took {elapsed:.1f} s"
        assert _leftover_processes(self.marker) == []
        return r


@pytest.fixture
def hostile(tmp_path):
    marker = f"sbxmark{os.getpid()}x{time.time_ns()}"
    canary = tmp_path / "canary.txt"
    canary.write_text("do not touch")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "data.bin").write_bytes(os.urandom(64))
    before = _snapshot(tmp_path)
    own = {p: p.read_bytes() for p in OWN_FILES}
    yield Hostile(tmp_path, marker, canary)
    assert _snapshot(tmp_path) == before
    assert {p: p.read_bytes() for p in OWN_FILES} == own
    assert _files_named(marker) == []
    assert run_program("print('still fine')").stdout == "still fine\n"  # the machinery survived


@pytest.fixture
def isolated():
    if not _isolated():
        pytest.skip("sandbox runs without Linux namespaces here (see the warning); isolation not testable")


# ----------------------------------------------------------------------------------------------
# CPU, memory, processes, files


@pytest.mark.slow
def test_infinite_loop(hostile):
    r = hostile.run("while True:\n    pass", "timeout", timeout_s=1)
    assert r.exit_code is None and r.duration_s < 1.5


@pytest.mark.slow
def test_busy_loop_in_thread(hostile):
    # a non-daemon thread keeps the interpreter alive after main ends: same as `python main.py`
    code = "import threading\nthreading.Thread(target=lambda: [0 for _ in iter(int, 1)]).start()\nprint('main done')"
    r = hostile.run(code, "timeout", timeout_s=1)
    assert r.duration_s < 1.5


@pytest.mark.slow
def test_endless_output_then_timeout(hostile):
    r = hostile.run("while True:\n    print('spam' * 100)", "timeout", timeout_s=1)
    assert len(r.stdout) < 12_000


def test_memory_bomb(hostile):
    code = "chunks = []\nwhile True:\n    chunks.append(bytearray(10 * 1024 * 1024))"
    r = hostile.run(code, "memory_limit", memory_mb=256)
    assert r.error_type == "MemoryError"


def test_memory_bomb_numpy(hostile):
    hostile.run("import numpy as np\nx = np.zeros((50_000, 50_000))\nx[:] = 1", "memory_limit", memory_mb=256)


@pytest.mark.slow
def test_fork_bomb(hostile):
    code = "import os\nwhile True:\n    os.fork()"
    r = hostile.run(code, ("runtime_error", "timeout"), timeout_s=2)
    if r.status == "runtime_error":
        assert r.error_type == "BlockingIOError"  # RLIMIT_NPROC said no


@pytest.mark.slow
def test_fork_bomb_that_ignores_errors(hostile):
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    hostile.run(code, "timeout", timeout_s=1)


def test_huge_file_write(hostile):
    code = ("chunk = b'x' * (1 << 20)\n"
            "with open('big.bin', 'wb') as f:\n"
            "    for _ in range(1024):\n"
            "        f.write(chunk)\n"
            "        f.flush()\n")
    r = hostile.run(code, "runtime_error")
    assert r.error_type == "OSError" and "File too large" in r.stderr


def test_write_and_delete_outside_sandbox(hostile, isolated):
    m = hostile.marker
    writes = [hostile.tmp_path / m, hostile.tmp_path / "sub" / m, REPO / m, REPO / "minirlaif" / m,
              Path.home() / m, Path("/tmp") / m, Path("/dev/shm") / m, Path("/var/tmp") / m]
    appends = [Path(__file__).resolve(), REPO / "minirlaif" / "sandbox.py"]
    deletes = [hostile.canary, hostile.tmp_path / "sub" / "data.bin", Path(__file__).resolve()]
    code = (
        "import os, shutil\n"
        "def attempt(what, fn, *args):\n"
        "    try:\n"
        "        fn(*args)\n"
        "        print('DONE', what, args[0])\n"
        "    except OSError as e:\n"
        "        print('blocked', what, args[0], e.strerror)\n"
        "def write(path):\n"
        "    with open(path, 'w') as f:\n"
        "        f.write('escaped')\n"
        "def append(path):\n"
        "    with open(path, 'a') as f:\n"
        "        f.write('#')\n"
        f"for p in {[str(p) for p in writes]!r}:\n"
        "    attempt('write', write, p)\n"
        f"for p in {[str(p) for p in appends]!r}:\n"
        "    attempt('append', append, p)\n"
        "    attempt('chmod', os.chmod, p, 0o777)\n"
        "    attempt('utime', os.utime, p, (0, 0))\n"
        f"for p in {[str(p) for p in deletes]!r}:\n"
        "    attempt('delete', os.remove, p)\n"
        f"attempt('rename', os.rename, {str(REPO / 'pyproject.toml')!r}, {str(REPO / m)!r})\n"
        f"attempt('rmtree', shutil.rmtree, {str(hostile.tmp_path)!r})\n"
    )
    r = hostile.run(code, "ok")
    done = [line for line in r.stdout.splitlines() if line.startswith("DONE")]
    # Writes to /tmp, /dev/shm land in the sandbox's own private tmpfs (gone afterwards): allowed.
    assert all(line.split()[2].startswith(("/tmp/", "/dev/shm/")) for line in done), done
    assert (REPO / "pyproject.toml").exists()


def test_kill_parent_process(hostile):
    r = hostile.run("import os\nos.kill(os.getppid(), 9)\nprint('parent killed?')", ("runtime_error", "killed"))
    if _isolated():
        assert r.error_type == "PermissionError"  # the server runs as another uid


def test_kill_everything_it_can(hostile):
    code = ("import os, signal\n"
            "for pid in (1, os.getppid(), -1):\n"
            "    try:\n"
            "        os.kill(pid, signal.SIGKILL)\n"
            "    except OSError as e:\n"
            "        print(pid, e.strerror)\n"
            "os.killpg(0, signal.SIGKILL)\n")
    r = hostile.run(code, "killed")
    assert r.error_type == "SIGKILL"


@pytest.mark.slow
def test_fork_server_killed_from_outside(hostile, isolated):
    """If a fork server dies mid-program, the caller gets a 'killed' result, not a hang or an exception."""
    sandbox.shutdown()
    box: dict = {}
    worker = threading.Thread(target=lambda: box.setdefault("r", run_program("import time\ntime.sleep(20)",
                                                                              timeout_s=30)))
    worker.start()
    deadline = time.monotonic() + 10
    launchers: list[int] = []
    while not launchers and time.monotonic() < deadline:
        time.sleep(0.2)
        for entry in Path("/proc").iterdir():
            try:
                if (entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(b"/usr/bin/unshare")
                        and (entry / "stat").read_text().rsplit(")", 1)[1].split()[1] == str(os.getpid())):
                    launchers.append(int(entry.name))
            except OSError:
                continue
    assert launchers, "fork server not found"
    time.sleep(0.5)  # let the program start
    for pid in launchers:
        os.kill(pid, signal.SIGKILL)
    worker.join(timeout=10)
    assert not worker.is_alive()
    assert box["r"].status == "killed" and "fork server lost" in box["r"].stderr


@pytest.mark.slow
def test_child_outlives_parent(hostile):
    m = hostile.marker
    code = (
        "import os, subprocess, sys\n"
        "sleeper = [sys.executable, '-c', 'import time; time.sleep(30)', " + repr(m) + "]\n"
        "subprocess.Popen(sleeper, start_new_session=True)\n"  # detached child
        "if os.fork() == 0:\n"  # classic double-fork daemon
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        os.execv(sys.executable, sleeper)\n"
        "    os._exit(0)\n"
        "import time\n"
        "time.sleep(0.5)\n"  # give them time to exist
        "print('parent exits')\n"
    )
    r = hostile.run(code, "ok", timeout_s=5)
    assert r.stdout == "parent exits\n"  # hostile.run already checked no process carries the marker


# ----------------------------------------------------------------------------------------------
# secrets and network


def test_env_secrets_invisible(hostile, isolated, monkeypatch):
    secret = "sk-test-secret-hostile"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("HF_TOKEN", secret)
    sandbox.shutdown()  # servers started from now on see the secret in our environment
    code = (
        "import glob, os\n"
        "print(os.environ)\n"
        "paths = ['/proc/self/environ', '/proc/1/environ', f'/proc/{os.getppid()}/environ']\n"
        "paths += glob.glob('/proc/*/environ') + glob.glob('/proc/*/task/*/environ') + glob.glob('/proc/*/cmdline')\n"
        f"paths += [{str(Path.home() / '.bashrc')!r}, '/proc/1/root/proc/1/environ']\n"
        "for p in paths:\n"
        "    try:\n"
        "        print(p, open(p, 'rb').read())\n"
        "    except OSError as e:\n"
        "        print(p, e.strerror)\n"
    )
    r = hostile.run(code, "ok")
    assert "/proc/self/environ b'" in r.stdout
    assert secret not in r.stdout + r.stderr


def _nothing_arrived(listener: socket.socket, datagrams: socket.socket) -> None:
    """No connection is waiting on `listener` and no datagram on `datagrams` (both non-blocking)."""
    with pytest.raises(BlockingIOError):
        listener.accept()
    with pytest.raises(BlockingIOError):
        datagrams.recv(10)


def test_connect_to_localhost_listeners(hostile, isolated):
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen(5)
        udp.bind(("127.0.0.1", 0))
        for s in (tcp, udp):
            s.setblocking(False)
        code = (
            "import socket\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {tcp.getsockname()[1]}), timeout=1)\n"
            "    print('TCP CONNECTED')\n"
            "except OSError as e:\n"
            "    print('tcp', e)\n"
            "try:\n"
            f"    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'hi', ('127.0.0.1', {udp.getsockname()[1]}))\n"
            "    print('udp sent')\n"
            "except OSError as e:\n"
            "    print('udp', e)\n"
        )
        r = hostile.run(code, "ok")
        assert "TCP CONNECTED" not in r.stdout
        _nothing_arrived(tcp, udp)
    finally:
        tcp.close()
        udp.close()


# ----------------------------------------------------------------------------------------------
# output and the ways a process can end


@pytest.mark.parametrize("code, expect", [
    ("import os\nos.close(1)\nprint('lost')", "runtime_error"),          # flush fails at exit: 120
    ("import sys\nsys.stdout.close()\nprint('x')", "runtime_error"),     # ValueError
    ("import os, sys\nsys.stdout = open(os.devnull, 'w')\nprint('x')", "ok"),
    ("import os\nos.dup2(os.open(os.devnull, os.O_WRONLY), 1)\nprint('x')", "ok"),
    ("import os\nos.close(1)\nos.close(2)\nraise ValueError('silent')", "runtime_error"),
    ("import os\nfor fd in range(3, 64):\n    try:\n        os.close(fd)\n    except OSError:\n        pass\n"
     "raise KeyError('no report pipe')", "runtime_error"),
])
def test_closing_or_redirecting_stdio(hostile, code, expect):
    r = hostile.run(code, expect)
    assert r.stdout == ""


def test_forged_report_cannot_fake_success(hostile):
    """fd 3 (the report pipe) is reachable, but the exit status decides 'ok'."""
    code = "import os\nos.write(3, b'\\n{\"error_type\": null}\\n')\nraise SystemExit(4)"
    r = hostile.run(code, "runtime_error")
    assert r.exit_code == 4


@pytest.mark.slow
def test_print_100mb(hostile):
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    r = hostile.run("import sys\nfor _ in range(100):\n    sys.stdout.write('x' * 1_000_000)\nprint('END')",
                    "ok", timeout_s=10)
    assert len(r.stdout) < 12_000 and "bytes truncated" in r.stdout and r.stdout.endswith("END\n")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 50_000  # KiB: no blowup here


def test_os_exit_code(hostile):
    r = hostile.run("import os\nprint('bye', flush=True)\nos._exit(7)", "runtime_error")
    assert (r.exit_code, r.error_type, r.stdout) == (7, None, "bye\n")


def test_signal_self(hostile):
    r = hostile.run("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)", "killed")
    assert (r.exit_code, r.error_type) == (-signal.SIGSEGV, "SIGSEGV")


def test_ctypes_segfault(hostile):
    r = hostile.run("import ctypes\nctypes.string_at(0)", "killed")
    assert r.error_type == "SIGSEGV"


def test_recursion_error(hostile):
    r = hostile.run("def f(n):\n    return f(n + 1)\nf(0)", "runtime_error")
    assert r.error_type == "RecursionError"


def test_import_nonexistent_module(hostile):
    r = hostile.run("import this_module_does_not_exist_42", "runtime_error")
    assert r.error_type == "ModuleNotFoundError"


def test_reading_stdin_hits_eof(hostile):
    r = hostile.run("input()", "runtime_error")
    assert r.error_type == "EOFError"


# ----------------------------------------------------------------------------------------------
# Attacks from the hardening review: nothing a program does makes the caller raise, memory is bounded
# as a whole, no host IPC, no keyrings, and the status comes from what the server observes.

_SYSCALLS = {"x86_64": {"add_key": 248, "unshare": 272}, "aarch64": {"add_key": 217, "unshare": 97}}


@lru_cache(maxsize=None)
def _facts() -> dict:
    return sandbox.isolation_info()


@pytest.fixture
def cgroup():
    if not _facts()["cgroup"]:
        pytest.skip(f"no memory cgroup for sandboxed programs here: {_facts()['cgroup_problem']}")


@pytest.fixture
def seccomp():
    if not _facts()["seccomp"] or os.uname().machine not in _SYSCALLS:
        pytest.skip("no seccomp filter for this machine's architecture")


FORGERIES = [
    # the report pipes: a forged setup error used to make run_program raise RuntimeError
    ("import os\nos.write(3, b'\\n{\"setup_error\": \"forged\"}\\n')\ntry:\n    os.write(4, b'\\n{\"setup_error\": \"x\"}\\n')\n"
     "except OSError:\n    pass\nprint('done')", "ok"),
    ("import os\nos.write(3, b'\\n{\"setup_error\": \"forged\"}\\n')\nos._exit(0)", "ok"),
    ("import os\nos.write(3, b'\\n{\"memory\": true, \"error_type\": \"MemoryError\"}\\n')\nraise ValueError", "runtime_error"),
    ("import os\nos.write(3, b'\\n{\"phase\": \"compile\", \"compile_error\": \"SyntaxError\"}\\n')\nraise ValueError",
     "runtime_error"),
    ("import os\nos.write(3, b'\\n{\"error_type\": \"' + b'A' * 5000 + b'\"}\\n')\nraise ValueError", "runtime_error"),
    # the harness's own objects: its globals are reachable through the frame below the program's
    ("import sys\ng = sys._getframe(1).f_globals\n"
     "for name in ('_exit_code_of', '_flush_std_streams', '_send'):\n    g[name] = lambda *a, **k: 0\n"
     "g['_exit'] = lambda code: g['os']._exit(0)\nraise ValueError('crash')", "runtime_error"),
    ("import builtins\nbuiltins.MemoryError = ValueError\nbuiltins.SyntaxError = ValueError\nraise ValueError(1)",
     "runtime_error"),
    # exit codes CPython truncates: a nonzero SystemExit never reads as success
    ("raise SystemExit(2**70)", "runtime_error"),
    ("raise SystemExit(256)", "runtime_error"),
    ("raise SystemExit(-256)", "runtime_error"),
    # a signal it sends itself is not a timeout
    ("import os, signal\nos.kill(os.getpid(), signal.SIGXCPU)", "killed"),
]


@pytest.mark.parametrize("code, expect", FORGERIES)
def test_forgeries_do_not_change_the_status(hostile, code, expect):
    r = hostile.run(code, expect)
    if expect == "runtime_error":
        assert r.exit_code != 0 and (r.error_type is None or len(r.error_type) <= 100)
    if "SystemExit(2**70)" in code:
        assert r.exit_code == 255  # what CPython exits with
    if "SIGXCPU" in code:
        assert r.error_type == "SIGXCPU"


def test_forgeries_in_a_batch_leave_the_others_alone():
    good = [f"print({i})" for i in range(6)]
    codes = good[:3] + [code for code, _ in FORGERIES] + good[3:]
    results = sandbox.run_programs(codes, workers=2)
    assert [r.stdout for r in results[:3] + results[-3:]] == [f"{i}\n" for i in range(6)]
    assert [r.status for r in results[3:-3]] == [expect for _, expect in FORGERIES]


@pytest.mark.parametrize("depth", [1100, 3000])
def test_deeply_nested_folders_are_cleaned_up(hostile, depth):
    """The server's cleanup used to recurse (RecursionError at ~1,000 levels) and raise in the caller."""
    code = (f"import os\nfor _ in range({depth}):\n    os.mkdir('d')\n    os.chdir('d')\n"
            "open('leaf.txt', 'w').write('x')\nos.chmod('.', 0)\nprint('deep')")
    r = hostile.run(code, "ok", timeout_s=10)
    assert r.stdout == "deep\n"
    assert run_program("import os\nprint(os.listdir('.'))").stdout == "['main.py']\n"


@pytest.mark.parametrize("what, code", [
    ("memfds", "import os\nfds = []\nfor i in range(100):\n    fd = os.memfd_create('x')\n"
               "    os.write(fd, b'x' * (15 << 20))\n    fds.append(fd)\nprint('held 1.5 GB')"),
    ("/tmp", "with open('/tmp/big', 'wb') as f:\n    for _ in range(40):\n        f.write(b'x' * (10 << 20))\nprint('wrote')"),
    ("/dev/shm", "with open('/dev/shm/big', 'wb') as f:\n    for _ in range(40):\n        f.write(b'x' * (10 << 20))\n"
                 "print('wrote')"),
    ("children", "import os, time\nfor _ in range(4):\n    if os.fork() == 0:\n        x = bytearray(60 << 20)\n"
                 "        time.sleep(1)\n        os._exit(0)\n"
                 "if any(os.wait()[1] for _ in range(4)):\n    raise SystemExit('a child was killed')\nprint('children done')"),
    ("mmap", "import mmap, numpy as np\nm = mmap.mmap(-1, 1 << 30)\nnp.frombuffer(m, dtype=np.uint8)[:] = 1\nprint('x')"),
])
def test_memory_the_rlimit_did_not_see(hostile, cgroup, what, code):
    """memory_mb bounds everything the program makes the host hold, not each process's address space."""
    r = hostile.run(code, "memory_limit", timeout_s=10, memory_mb=100, max_file_mb=1024)
    assert r.error_type == "MemoryError" and r.stdout == "", r


def test_no_new_user_namespace_or_mount(hostile, seccomp):
    """A user namespace would let a program mount its own tmpfs; the filter refuses it (and mounts)."""
    nr = _SYSCALLS[os.uname().machine]["unshare"]
    code = ("import ctypes, os, subprocess\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            f"print(libc.syscall({nr}, 0x10000000 | 0x20000), ctypes.get_errno())\n"
            "r = subprocess.run(['unshare', '-Urm', 'true'], capture_output=True)\nprint(r.returncode)")
    r = hostile.run(code, "ok")
    first, second = r.stdout.split("\n")[:2]
    assert first == "-1 1" and second != "0", r.stdout  # EPERM


def test_host_unix_socket_unreachable(hostile, isolated, seccomp):
    folder = Path(tempfile.mkdtemp(dir="/var/tmp"))
    path = folder / "service.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        folder.chmod(0o777)
        server.bind(str(path))
        server.listen(5)
        server.setblocking(False)
        dgram.bind(str(folder / "dgram.sock"))
        dgram.setblocking(False)
        for p in folder.iterdir():
            p.chmod(0o777)
        code = (
            "import socket\n"
            "for attempt in ('stream', 'dgram', 'pair'):\n"
            "    try:\n"
            "        if attempt == 'stream':\n"
            "            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
            f"            s.connect({str(path)!r})\n"
            "        elif attempt == 'dgram':\n"
            "            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
            f"            s.sendto(b'hi', {str(folder / 'dgram.sock')!r})\n"
            "        else:\n"
            "            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
            f"            a.sendto(b'hi', {str(folder / 'dgram.sock')!r})\n"
            "        print('REACHED', attempt)\n"
            "    except OSError as e:\n"
            "        print('blocked', attempt, e.errno)\n"
            "a, b = socket.socketpair()\na.sendall(b'ping')\nprint(b.recv(4).decode())\n"  # in-process IPC still works
        )
        r = hostile.run(code, "ok")
        assert "REACHED" not in r.stdout and r.stdout.count("blocked") == 3 and r.stdout.endswith("ping\n"), r.stdout
        _nothing_arrived(server, dgram)
    finally:
        server.close()
        dgram.close()
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()


def test_kernel_keyrings_refused(hostile, seccomp):
    nr = _SYSCALLS[os.uname().machine]["add_key"]
    desc = hostile.marker
    code = ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            f"ret = libc.syscall({nr}, b'user', {desc.encode()!r}, b'secret', 6, -4)\n"  # KEY_SPEC_USER_KEYRING
            "print(ret, ctypes.get_errno())\n"
            "print(open('/proc/keys').read())")
    r = hostile.run(code, "ok")
    assert r.stdout.splitlines()[0] == "-1 1" and desc not in r.stdout  # EPERM
    r2 = hostile.run(f"print({desc!r} in open('/proc/keys').read())", "ok")
    assert r2.stdout == "False\n"
    assert desc not in Path("/proc/keys").read_text()


def test_interrupted_call_does_not_shift_later_results():
    """A KeyboardInterrupt between request and reply must not hand A's output to the next call."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt
    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(KeyboardInterrupt):
            run_program("import time\ntime.sleep(1)\nprint('A')")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert [run_program(f"print('{c}')").stdout for c in "BCD"] == ["B\n", "C\n", "D\n"]


@pytest.mark.parametrize("kwargs", [
    {"timeout_s": float("inf")}, {"timeout_s": float("nan")}, {"timeout_s": 0}, {"timeout_s": -1},
    {"memory_mb": 0}, {"memory_mb": -5}, {"max_procs": 0}, {"max_output_bytes": -1},
])
def test_bad_limits_refused_up_front(kwargs):
    with pytest.raises(ValueError):
        run_program("print(1)", **kwargs)
    assert run_program("print(2)").stdout == "2\n"  # and nothing was poisoned
