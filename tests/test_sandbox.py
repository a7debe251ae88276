"""minirlaif.sandbox: results, classification, and the basic isolation guarantees."""

import ast
import shutil
import sys
import os
import socket
import time
from functools import lru_cache
from pathlib import Path

import pytest

from minirlaif import sandbox
from minirlaif.sandbox import SandboxResult, run_program, run_programs

REPO = Path(__file__).resolve().parents[1]


@lru_cache(maxsize=None)
def _isolated() -> bool:
    return bool(sandbox.isolation_info()["namespaces"])


@pytest.fixture
def isolated():
    """Skip tests of the namespace guarantees where the sandbox had to fall back (not root, no unshare)."""
    if not _isolated():
        pytest.skip("sandbox runs without Linux namespaces here (see the warning); isolation not testable")


def test_ok_program_stdout():
    r = run_program("import numpy as np\nresult = np.arange(5).sum()\nprint(result)")
    assert isinstance(r, SandboxResult)
    assert (r.status, r.ok, r.exit_code, r.error_type, r.stdout, r.stderr) == ("ok", True, 0, None, "10\n", "")
    assert 0 < r.duration_s < 5


def test_stdin_is_passed():
    r = run_program("import sys\nprint(sys.stdin.read().upper())", stdin="hello\nworld")
    assert r.ok and r.stdout == "HELLO\nWORLD\n"


def test_syntax_error():
    r = run_program("def f(:\n    pass\n")
    assert (r.status, r.exit_code, r.error_type, r.ok) == ("syntax_error", 1, "SyntaxError", False)
    assert "SyntaxError" in r.stderr


def test_name_error_traceback_points_at_program():
    r = run_program("x = 1\nprint(undefined_name)\n")
    assert (r.status, r.exit_code, r.error_type) == ("runtime_error", 1, "NameError")
    lines = r.stderr.strip().splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert 'main.py", line 2, in <module>' in lines[1]  # no sandbox frames in between
    assert lines[-1] == "NameError: name 'undefined_name' is not defined"


def test_module_not_found():
    r = run_program("import definitely_not_a_module_xyz")
    assert (r.status, r.error_type) == ("runtime_error", "ModuleNotFoundError")


@pytest.mark.parametrize("code, status, exit_code, error_type", [
    ("import sys; sys.exit(0)", "ok", 0, None),
    ("import sys; sys.exit()", "ok", 0, None),
    ("import sys; sys.exit(3)", "runtime_error", 3, "SystemExit"),
    ("raise SystemExit('bye')", "runtime_error", 1, "SystemExit"),
])
def test_sys_exit(code, status, exit_code, error_type):
    r = run_program(code)
    assert (r.status, r.exit_code, r.error_type) == (status, exit_code, error_type)


def test_stdlib_imports_and_subprocess_work():
    """Non-preloaded stdlib modules and the interpreter itself stay reachable inside the sandbox."""
    code = ("import fractions, wave, subprocess, sys\n"
            "print(fractions.Fraction(1, 3) * 3)\n"
            "print(subprocess.run([sys.executable, '-c', 'print(6 * 7)'], capture_output=True, text=True).stdout)")
    r = run_program(code)
    assert r.ok, r.stderr
    assert r.stdout.split() == ["1", "42"]


@pytest.mark.slow
def test_timeout_infinite_loop():
    start = time.monotonic()
    r = run_program("while True:\n    pass", timeout_s=1)
    elapsed = time.monotonic() - start
    assert (r.status, r.exit_code) == ("timeout", None)
    assert 1.0 <= r.duration_s < 2.0 and elapsed < 3.0


def test_memory_limit():
    r = run_program("x = bytearray(2 * 1024**3)\nprint('allocated')", memory_mb=256)
    assert (r.status, r.error_type) == ("memory_limit", "MemoryError")
    assert "allocated" not in r.stdout


def test_memory_limit_numpy():
    r = run_program("import numpy as np\na = np.ones(2 * 1024**3 // 8)\nprint(a.sum())", memory_mb=256)
    assert r.status == "memory_limit"


def test_output_truncated_with_marker():
    r = run_program("print('a' * 50_000)\nprint('END')", max_output_bytes=1_000)
    assert r.ok and len(r.stdout) < 1_200
    assert r.stdout.startswith("aaa") and "bytes truncated" in r.stdout and r.stdout.endswith("END\n")


def test_no_network(isolated):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        code = ("import socket\n"
                f"s = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
                "print('CONNECTED')\n")
        r = run_program(code, timeout_s=5)
        assert r.status == "runtime_error" and r.error_type in ("OSError", "ConnectionRefusedError",
                                                                 "TimeoutError"), r
        assert "CONNECTED" not in r.stdout
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever reached the host's listener
    finally:
        listener.close()


def test_no_write_outside_its_dir(isolated, tmp_path):
    marker = f"sandbox_escape_{os.getpid()}_{time.time_ns()}"
    targets = [tmp_path / marker, REPO / marker, Path.home() / marker]
    code = ("import os\n"
            f"for path in {[str(t) for t in targets]!r}:\n"
            "    try:\n"
            "        with open(path, 'w') as f:\n"
            "            f.write('escaped')\n"
            "        print('WROTE', path)\n"
            "    except OSError as e:\n"
            "        print('blocked', path, e)\n"
            "with open('inside.txt', 'w') as f:\n"  # its own dir is writable
            "    f.write('fine')\n"
            "print(os.path.exists('inside.txt'))\n")
    r = run_program(code)
    assert r.ok, r.stderr
    assert "WROTE" not in r.stdout and r.stdout.strip().endswith("True")
    for target in targets:
        assert not target.exists()


def test_env_scrubbed_and_proc_hides_secrets(isolated, monkeypatch):
    secret = "sk-test-secret"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    sandbox.shutdown()  # fresh fork servers, started while the secret is in our environment
    code = ("import os, glob\n"
            "print(dict(os.environ))\n"
            "paths = ['/proc/self/environ', '/proc/1/environ', f'/proc/{os.getppid()}/environ']\n"
            "for path in paths + glob.glob('/proc/*/environ') + glob.glob('/proc/*/cmdline'):\n"
            "    try:\n"
            "        print(path, open(path, 'rb').read())\n"
            "    except OSError as e:\n"
            "        print(path, 'unreadable', e)\n")
    r = run_program(code)
    assert r.ok, r.stderr
    assert "/proc/self/environ b'" in r.stdout  # the reads really happened
    assert secret not in r.stdout and secret not in r.stderr and "OPENAI" not in r.stdout
    env = eval(r.stdout.splitlines()[0])  # noqa: S307 - our own program's repr of a dict of str
    assert env["PYTHONHASHSEED"] == "0" and env["OMP_NUM_THREADS"] == "1"
    assert env["HOME"] == os.getcwd() or env["HOME"].startswith("/tmp")


def test_nothing_leaks_to_the_next_program(isolated):
    write = ("import os\n"
             "for path in ['left.txt', '/tmp/left.txt', '/dev/shm/left.txt', os.path.expanduser('~/left.txt')]:\n"
             "    open(path, 'w').write('x')\n"
             "os.environ['LEFT'] = '1'\n")
    look = ("import os\n"
            "print(sorted(os.listdir('.')), os.listdir('/tmp'), os.listdir('/dev/shm'), 'LEFT' in os.environ)\n")
    r1 = run_program(write)
    assert r1.ok, r1.stderr
    r2 = run_program(look)
    assert r2.ok, r2.stderr
    cwd, tmp, shm, left = ast.literal_eval("(" + r2.stdout.strip().replace("] ", "], ") + ")")
    # The Python install is re-exposed read-only; when it lives under /tmp (e.g. a clone in /tmp) its
    # top folder shows up in the sandbox's /tmp too. Nothing else may: program 1's files are gone.
    reexposed = {Path(p).parts[2] for p in (sys.prefix, sys.base_prefix, *sys.path)
                 if p.startswith("/tmp/") and len(Path(p).parts) > 2}
    assert (cwd, shm, left) == (["main.py"], [], False), r2.stdout
    assert "work" in tmp and set(tmp) <= {"work"} | reexposed and "left.txt" not in tmp, (tmp, reexposed)


def test_run_programs_order_and_consistency():
    codes = [f"print({i} * {i})" for i in range(12)]
    codes += ["print(undefined)", "x = (", "import sys; sys.exit(3)", "import os; os._exit(7)"]
    results = run_programs(codes, workers=3)
    assert [r.stdout for r in results[:12]] == [f"{i * i}\n" for i in range(12)]
    singles = [run_program(code) for code in codes]
    key = lambda r: (r.status, r.exit_code, r.error_type, r.stdout)  # noqa: E731
    assert [key(r) for r in results] == [key(r) for r in singles]
    assert [r.status for r in results[12:]] == ["runtime_error", "syntax_error", "runtime_error", "runtime_error"]
    assert run_programs([]) == []


def test_each_program_is_a_fresh_interpreter():
    """Pre-imported modules are shared read-only; state a program changes never reaches the next one."""
    r1 = run_program("import json, random\njson.dumps = None\nprint(random.random())")
    r2 = run_program("import json, random\nprint(json.dumps([1]))\nprint(random.random())")
    assert r1.ok and r2.ok and r2.stdout.splitlines()[0] == "[1]"
    assert r1.stdout.split()[0] != r2.stdout.split()[1]  # reseeded per program, like a new interpreter


def test_bad_arguments():
    with pytest.raises(TypeError):
        run_program(b"print(1)")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        run_program("print(1)", timeout_s=0)


def _cmdlines() -> list[bytes]:
    out = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            out.append(path.read_bytes())
        except OSError:
            pass  # exited meanwhile
    return out


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*not readable by other users.*:RuntimeWarning")  # e.g. python under a 700 /root
def test_fallback_without_namespaces(monkeypatch):
    """Where namespaces are unavailable: one warning, then programs still run, time out and get cleaned up."""
    pool = sandbox._Pool()
    monkeypatch.setattr(sandbox, "_POOL", pool)
    monkeypatch.setattr(sandbox, "_namespace_problem", lambda: "forced by the test")
    marker = f"fallbackmark{time.time_ns()}"
    daemon = ("import os, sys\n"
              "if os.fork() == 0:\n"
              "    os.setsid()\n"
              "    if os.fork() == 0:\n"
              f"        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(30)', {marker!r}])\n"
              "    os._exit(0)\n"
              "import os\nprint(os.getcwd())\n")
    try:
        with pytest.warns(RuntimeWarning, match="namespaces unavailable"):
            first = run_program("print(6 * 7)")
        assert first.ok and first.stdout == "42\n"
        assert run_program("while True:\n    pass", timeout_s=1).status == "timeout"
        r = run_program(daemon)
        assert r.ok, r.stderr
        assert not os.path.exists(r.stdout.strip())  # its temp dir is gone
        deep = ("import os\nprint(os.getcwd())\nfor _ in range(3000):\n    os.mkdir('d')\n    os.chdir('d')\n"
                "os.chmod('.', 0)")  # deeper than PATH_MAX, and a folder it made unreadable
        r = run_program(deep, timeout_s=10)
        assert r.ok, r.stderr
        assert not os.path.exists(r.stdout.strip())
        assert not any(marker.encode() in c for c in _cmdlines())  # the daemon was killed
        assert sandbox.isolation_info()["namespaces"] is False
    finally:
        pool.close_idle()


def test_python_path_under_tmp_survives(isolated, tmp_path, monkeypatch):
    """A sys.path entry under /tmp (e.g. a CI venv) stays importable, read-only, and is never wiped."""
    (tmp_path / "sbx_helper_mod.py").write_text("X = 41 + 1\n")
    tmp_path.chmod(0o755)  # pytest makes it 0700; programs run as an unprivileged uid
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    sandbox.shutdown()  # new servers pick up PYTHONPATH
    try:
        code = ("import os, sbx_helper_mod\n"
                "print(sbx_helper_mod.X)\n"
                f"for name in ('sbx_helper_mod.py', 'new.py'):\n"
                f"    try:\n"
                f"        open(os.path.join({str(tmp_path)!r}, name), 'a').write('#')\n"
                "        print('WROTE', name)\n"
                "    except OSError as e:\n"
                "        print('blocked', e.strerror)\n")
        for _ in range(2):  # the wipe after the first program must leave the directory alone
            r = run_program(code)
            assert r.ok, r.stderr
            assert r.stdout.splitlines()[0] == "42" and "WROTE" not in r.stdout
        assert sorted(p.name for p in tmp_path.iterdir()) == ["sbx_helper_mod.py"]
        assert (tmp_path / "sbx_helper_mod.py").read_text() == "X = 41 + 1\n"
    finally:
        monkeypatch.delenv("PYTHONPATH")
        sandbox.shutdown()


@pytest.mark.filterwarnings("ignore:.*not readable by other users.*:RuntimeWarning")
def test_without_cgroup_and_seccomp_warns_once_and_degrades(monkeypatch):
    """Where the kernel has no cgroup or filter for us: one warning, RLIMIT_AS per process, and
    REQUIRE_ISOLATION refuses."""
    pool = sandbox._Pool()
    monkeypatch.setattr(sandbox, "_POOL", pool)
    monkeypatch.setattr(sandbox, "WITHOUT", ("cgroup", "seccomp"))
    try:
        with pytest.warns(RuntimeWarning) as caught:
            results = run_programs(["print(1)", "print(2)"], workers=2)  # two servers, one warning
        said = [str(w.message) for w in caught if "running without" in str(w.message)]
        assert len(said) == 1 and len(pool.idle) == 2, (said, len(pool.idle))
        assert "without a memory cgroup per program (switched off" in said[0] and "without the seccomp filter" in said[0]
        assert [r.stdout for r in results] == ["1\n", "2\n"]
        r = run_program("x = bytearray(2 * 1024**3)", memory_mb=256)
        assert (r.status, r.error_type) == ("memory_limit", "MemoryError")  # the program's own word here
        facts = sandbox.isolation_info()
        assert (facts["cgroup"], facts["seccomp"]) == (0, False)
        pool.close_idle()
        monkeypatch.setattr(sandbox, "REQUIRE_ISOLATION", True)
        with pytest.raises(RuntimeError, match="isolation unavailable"):
            run_program("print(1)")
    finally:
        pool.close_idle()


@pytest.mark.filterwarnings("ignore:.*not readable by other users.*:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:.*namespaces unavailable.*:RuntimeWarning")
def test_fallback_cleanup_never_follows_a_link_the_program_left(monkeypatch, tmp_path):
    """Without namespaces the work dir lives in the host's /tmp, and the server deletes it as root: a
    program that swaps it for a link to a host folder, or deletes it, must not make that go wrong."""
    pool = sandbox._Pool()
    monkeypatch.setattr(sandbox, "_POOL", pool)
    monkeypatch.setattr(sandbox, "_namespace_problem", lambda: "forced by the test")
    host = tmp_path / "host"
    host.mkdir()
    (host / "keep.txt").write_text("keep")
    host.chmod(0o777)
    swap = ("import os\nd = os.getcwd()\nos.chdir('/')\nos.rename(d, d + '-moved')\n"
            f"os.symlink({str(host)!r}, d)\nprint(d)")
    gone = "import os\nd = os.getcwd()\nos.chdir('/')\nos.remove(d + '/main.py')\nos.rmdir(d)\nprint('gone')"
    try:
        r = run_program(swap)
        assert r.ok, r
        moved = Path(r.stdout.strip() + "-moved")
        assert not os.path.lexists(r.stdout.strip()) and (host / "keep.txt").read_text() == "keep"
        assert sorted(p.name for p in host.iterdir()) == ["keep.txt"]
        r = run_program(gone)
        assert (r.status, r.stdout) == ("ok", "gone\n"), r
    finally:
        pool.close_idle()
        if "moved" in locals():
            shutil.rmtree(moved, ignore_errors=True)  # what a program moves out of reach stays (fallback only)
