"""Fork server of `minirlaif.sandbox`. Run as a script by the host; never imported by it.

The host normally starts this file as

    unshare --net --mount --pid --ipc --fork --kill-child --mount-proc -- python _sandbox_worker.py --namespaces ...

so this process is PID 1 of fresh network, mount, PID and IPC namespaces, and still root. It then

  1. shapes its filesystem view: private tmpfs on /tmp and /dev/shm, /root and /home hidden behind
     empty tmpfs (with the Python install re-exposed), every other mount remounted read-only,
     /proc remounted with hidepid=2;
  2. moves itself into a memory cgroup of its own and checks that a child can load the seccomp filter
     (both in _sandbox_limits.py, beside this file);
  3. pre-imports numpy and common stdlib modules once (every fork inherits them for free);
  4. serves requests: one JSON object per line on stdin, one JSON result per line on stdout.
     For each request it sets the cgroup's limit, forks a child that drops to a fresh random uid,
     applies rlimits and the filter, and runs the code as __main__ in /tmp/work. The server enforces
     the wall-clock timeout, keeps the (truncated) output, kills every process the program left
     behind, empties /tmp and /dev/shm (_clean_scratch), classifies the result from what it
     observed (_classify), and only then answers.

Without `--namespaces` the same loop runs on the host directly, with much weaker isolation
(see the docstring of sandbox.py). This file imports nothing from minirlaif.
"""

from __future__ import annotations

import os
import sys

# `python this_file.py` puts our own folder first on sys.path; it must not shadow any module for
# the server or for the programs (sys.path[0] becomes the program's folder instead).
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

import argparse  # noqa: E402
import atexit  # noqa: E402
import builtins  # noqa: E402
import ctypes  # noqa: E402
import fcntl  # noqa: E402
import gc  # noqa: E402
import importlib  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import linecache  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import selectors  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import stat  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import types  # noqa: E402

# The cgroup and the seccomp filter live beside this file; loaded by path (our folder is off sys.path).
_spec = importlib.util.spec_from_file_location(
    "_sandbox_limits", os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sandbox_limits.py"))
limits = importlib.util.module_from_spec(_spec)
sys.modules["_sandbox_limits"] = limits
_spec.loader.exec_module(limits)

# Bound once, before any untrusted code exists: a program that monkeypatches os._exit or os.write
# in its own process must not be able to change how the child ends or reports.
_exit = os._exit
_write = os.write
_dumps = json.dumps

WORK_DIR = "/tmp/work"              # the program's cwd and HOME (namespace mode; a fresh tmpfs dir)
SCRATCH_DIRS = ("/tmp", "/dev/shm")  # private tmpfs, emptied after every program
HIDDEN_DIRS = ("/root", "/home")     # replaced by empty tmpfs: other users' and root's files (keys!)
TMPFS_MB = 512                       # size cap of each scratch tmpfs
TAIL_BYTES_FRACTION = 5              # 1/5 of the output budget keeps the END of the stream (tracebacks)
REPORT_TAIL = 4096                   # bytes of the child's report pipe we keep
UID_RANGE = (100_000, 2**31 - 2)     # fresh uid per program: no file, process or keyring shares it

# Linux constants (from <sys/mount.h> and <linux/prctl.h>); Python's os module has no mount/prctl.
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND = 32, 1024, 2048, 4096
MS_REC, MS_PRIVATE, MS_RELATIME, MS_STRICTATIME = 16384, 1 << 18, 1 << 21, 1 << 24
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 4, 36, 38
MNT_DETACH = 2
_MOUNT_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
                "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME, "strictatime": MS_STRICTATIME}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


# ----------------------------------------------------------------------------------------------
# one-time setup of the server (runs as root, before any program)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    """mount(2) through libc; raises OSError like the os module would."""
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    if _libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def _prctl(option: int, value: int) -> None:
    if _libc.prctl(option, value, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")


def _python_paths() -> list[str]:
    """Real directories the interpreter (and a program's `import x`) reads from: keep them visible."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(sys.executable), *sys.path}
    real = set()
    for p in paths:
        p = os.path.realpath(p or ".")
        if os.path.isfile(p):
            p = os.path.dirname(p)
        if os.path.isdir(p):
            real.add(p)
    # drop paths that sit inside another kept path (one bind mount covers them)
    return sorted(p for p in real if not any(p != q and p.startswith(q + "/") for q in real))


def _readable_by_anyone(path: str) -> bool:
    """Can a uid that owns nothing (and has no groups) reach this directory? o+x on every ancestor, o+r on it."""
    parts = path.rstrip("/").split("/")
    for i in range(1, len(parts) + 1):
        if not os.stat("/".join(parts[:i]) or "/").st_mode & stat.S_IXOTH:
            return False
    return bool(os.stat(path).st_mode & stat.S_IROTH)


def _mountinfo() -> list[tuple[str, str]]:
    """(mount point, per-mount options) for every mount we can see."""
    unescape = lambda s: re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)  # noqa: E731
    with open("/proc/self/mountinfo") as f:
        return [(unescape(line.split()[4]), line.split()[5]) for line in f]


def _cover(directory: str, tmpfs_options: str, keep: list[str]) -> list[tuple[str, int]]:
    """Mount an empty tmpfs over `directory`, then bind the `keep` paths inside it back in place.

    O_PATH fds opened *before* covering let us reach the covered originals through /proc/self/fd.
    Returns (re-exposed path, its fd): the fds stay open so a scratch dir can be renewed later
    (children close them before any program runs). Read-only comes with every other mount later.
    """
    inside = [(p, os.open(p, os.O_PATH)) for p in keep if p.startswith(directory + "/")]
    _mount("tmpfs", directory, "tmpfs", MS_NOSUID | MS_NODEV, tmpfs_options)
    for path, fd in inside:
        os.makedirs(path, exist_ok=True)
        _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
    return inside


_SCRATCH_OPTIONS = f"size={TMPFS_MB}m,nr_inodes=65536,mode=1777"
_SCRATCH_BINDS: dict[str, list[tuple[str, int]]] = {}  # scratch dir -> re-exposed Python paths inside it
_SCRATCH_INODES: dict[str, int] = {}  # scratch dir -> inodes its tmpfs uses when fresh


def _used_inodes(directory: str) -> int:
    st = os.statvfs(directory)
    return st.f_files - st.f_ffree


def _clean_scratch() -> None:
    """After a program: make /tmp and /dev/shm as they were. Most programs leave nothing but their work
    dir, which is removed directly; anything else (or anything unexpected) renews the mounts."""
    try:
        fresh = all(_used_inodes(d) == _SCRATCH_INODES[d] + (2 if d == os.path.dirname(WORK_DIR) else 0)
                    for d in _SCRATCH_BINDS)
        fresh = fresh and stat.S_ISDIR(os.lstat(WORK_DIR).st_mode)  # not a link the program put there
        if fresh:
            os.unlink(os.path.join(WORK_DIR, "main.py"))  # fails if the program moved or replaced it
            os.rmdir(WORK_DIR)
            fresh = all(_used_inodes(d) == _SCRATCH_INODES[d] for d in _SCRATCH_BINDS)
    except OSError:
        fresh = False
    if not fresh:
        _renew_scratch()


def _renew_scratch() -> None:
    """Replace /tmp and /dev/shm by fresh, empty tmpfs mounts after a program.

    Detaching the old mount takes the same time whatever the program left there (folders of any
    depth, any number of files), and frees its memory as soon as no process holds it (none does: every
    process of the program is dead by now).
    """
    for directory, binds in _SCRATCH_BINDS.items():
        if _libc.umount2(directory.encode(), MNT_DETACH) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"umount {directory}: {os.strerror(err)}")
        _mount("tmpfs", directory, "tmpfs", MS_NOSUID | MS_NODEV, _SCRATCH_OPTIONS)
        for path, fd in binds:
            os.makedirs(path, exist_ok=True)
            _mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
            _mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
        _SCRATCH_INODES[directory] = _used_inodes(directory)


def _setup_filesystem() -> dict:
    """Give this mount namespace its read-only, secret-free view of the machine. Returns facts."""
    facts = {"private_tmp": False, "readonly_root": False, "hidden": [], "hidepid": False, "kept_in_scratch": []}
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount here propagates to the host
    keep = _python_paths()  # the interpreter must stay reachable whatever we cover

    # 1. Hide home directories (API keys in ~/.config, ~/.netrc, tokens ...) behind an empty tmpfs.
    for hidden in HIDDEN_DIRS:
        if os.path.isdir(hidden) and not os.path.islink(hidden):
            for _, fd in _cover(hidden, "size=1m,mode=755", keep):
                os.close(fd)
            facts["hidden"].append(hidden)

    # 2. Private scratch space; world-writable like the real thing, but ours alone and wiped per program.
    for d in SCRATCH_DIRS:
        if os.path.isdir(d) and not os.path.islink(d):
            _SCRATCH_BINDS[d] = _cover(d, _SCRATCH_OPTIONS, keep)
            _SCRATCH_INODES[d] = _used_inodes(d)
            facts["kept_in_scratch"] += [path for path, _ in _SCRATCH_BINDS[d]]
    facts["private_tmp"] = True

    # 3. Everything else read-only (bind-remounts change only our namespace's copy of each mount).
    for mountpoint, options in _mountinfo():
        if mountpoint in SCRATCH_DIRS or mountpoint == "/proc" or mountpoint.startswith("/proc/"):
            continue
        if mountpoint.startswith("/sys/fs/cgroup"):
            continue  # the server makes a cgroup per program; files there are root's, read-only to programs
        flags = MS_BIND | MS_REMOUNT | MS_RDONLY
        for opt in options.split(","):
            flags |= _MOUNT_FLAGS.get(opt, 0)
        try:
            _mount(None, mountpoint, None, flags)
            facts["readonly_root"] |= mountpoint == "/"
        except OSError:
            pass  # e.g. a mount hidden under another one: unreachable by path, so unreachable for programs

    # 4. Programs see only their own processes in /proc (the server's environ is scrubbed anyway).
    try:
        _mount("proc", "/proc", "proc", MS_REMOUNT | MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")
        facts["hidepid"] = True
    except OSError:
        pass
    return facts


def _disable_sysv_ipc() -> None:
    """In our own IPC namespace: no SysV shm/msg/sem or POSIX mqueues, so no state outlives a program."""
    for path, value in (("kernel/shmmni", "0"), ("kernel/msgmni", "0"), ("kernel/sem", "0 0 0 0"),
                        ("fs/mqueue/queues_max", "0")):
        try:
            with open(f"/proc/sys/{path}", "w") as f:
                f.write(value)
        except OSError:
            pass


def _preload(names: list[str]) -> list[str]:
    """Import the modules programs commonly use, once; forks inherit them. Missing ones are skipped."""
    loaded = []
    for name in names:
        try:
            importlib.import_module(name)
            loaded.append(name)
        except Exception:  # noqa: BLE001 - a broken optional module must not stop the server
            pass
    return loaded


# ----------------------------------------------------------------------------------------------
# the forked child: lock down, then run the program (runs once per program; never returns)


def _program_env(work: str) -> dict[str, str]:
    """The server's environment is already minimal (built from scratch by the host); adjust paths."""
    env = dict(os.environ)
    env.update(HOME=work, TMPDIR=work, PWD=work)
    return env


def _lock_down(req: dict, work: str, pipes: tuple[int, int, int, int], uid: int | None,
               cgroup: limits.Cgroup | None, seccomp: bytes | None) -> str:
    """Turn the fresh fork into the program's process. Returns the path of main.py."""
    # stdio first: fd 4 is the setup pipe, so anything failing below can still be reported.
    # F_DUPFD moves the pipe ends above 10 so the dup2s below cannot clobber one another.
    info, setup, out, err = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in pipes)
    os.dup2(info, 3)
    os.dup2(setup, 4)
    os.dup2(out, 1)
    os.dup2(err, 2)
    if cgroup is not None:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")  # the OOM killer takes the program's processes first, never the server
    stdin_fd = os.memfd_create("stdin")  # stdin is a file: no writer to deadlock with
    data = req["stdin"].encode("utf-8", "surrogateescape")
    while data:
        data = data[os.write(stdin_fd, data):]
    os.lseek(stdin_fd, 0, os.SEEK_SET)
    os.dup2(stdin_fd, 0)
    os.closerange(5, os.sysconf("SC_OPEN_MAX"))  # the server's protocol pipes must not be reachable

    os.setsid()  # own session + process group: no terminal, and a group we can kill as a whole
    os.chdir(work)
    os.umask(0o022)

    # Resource limits. With a cgroup, memory is limited there (it sees everything, see limits.Cgroup);
    # without one, RLIMIT_AS per process is all we have. It counts the pre-warmed interpreter too, so
    # memory_mb is granted on top of what the fork already maps (numpy alone maps ~100 MB).
    mb = 1 << 20
    cpu_s = math.ceil(req["timeout_s"]) + 1  # backstop for the server's wall clock
    rlimits = [(resource.RLIMIT_CPU, cpu_s), (resource.RLIMIT_FSIZE, req["max_file_mb"] * mb),
              (resource.RLIMIT_NOFILE, 256), (resource.RLIMIT_CORE, 0)]
    if cgroup is None:
        with open("/proc/self/statm") as f:
            mapped = int(f.read().split()[0]) * resource.getpagesize()
        rlimits.append((resource.RLIMIT_AS, mapped + req["memory_mb"] * mb))
    if uid is not None:  # RLIMIT_NPROC counts per uid; only meaningful with a uid of our own
        rlimits.append((resource.RLIMIT_NPROC, req["max_procs"]))
    for which, value in rlimits:
        hard = value + 1 if which == resource.RLIMIT_CPU else value  # SIGXCPU first, SIGKILL 1 s later
        resource.setrlimit(which, (value, hard))

    # Privileges: a fresh uid that owns nothing but the work dir; no setuid binary can raise it again.
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        _prctl(PR_SET_DUMPABLE, 1)  # uid change clears it; keep /proc/self and own children readable
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # if the server dies, so do we (set after the uid change)
    if seccomp is not None:
        limits.install_seccomp(seccomp)

    # Python-level state: make this fork look like `cd work && python main.py`.
    main_path = os.path.join(work, "main.py")
    env = _program_env(work)
    os.environ.clear()
    os.environ.update(env)
    sys.argv = [main_path]
    sys.path.insert(0, work)
    main = types.ModuleType("__main__")
    main.__file__, main.__builtins__, main.__cached__ = main_path, builtins, None
    sys.modules["__main__"] = main
    sys.stdin = sys.__stdin__ = open(0, "r", encoding="utf-8", closefd=False)
    sys.stdout = sys.__stdout__ = open(1, "w", encoding="utf-8", closefd=False)
    sys.stderr = sys.__stderr__ = open(2, "w", encoding="utf-8", errors="backslashreplace",
                                       buffering=1, closefd=False)
    tempfile.tempdir = None
    linecache.clearcache()
    random.seed()  # a fresh interpreter seeds from the OS; forks would otherwise share one stream
    if "numpy.random" in sys.modules:  # (numpy imports it lazily: never trigger that import here)
        sys.modules["numpy.random"].seed()
    return main_path


def _send(fd: int, info: dict) -> None:
    """One JSON line to the server on `fd`. Best effort: the program may have closed fd 3."""
    try:
        _write(fd, ("\n" + _dumps(info) + "\n").encode())
    except Exception:  # noqa: BLE001
        pass


def _exit_code_of(exc: SystemExit) -> int:
    """What `python main.py` exits with for an uncaught SystemExit, except that a nonzero code never
    becomes 0 (CPython's exit(256) does: the OS keeps the low 8 bits)."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        if not -(2**63) <= code < 2**63:
            return 255  # CPython: the code does not fit a C long, exit(-1)
        return (code & 0xFF) or (1 if code else 0)
    try:
        print(code, file=sys.stderr)
    except Exception:  # noqa: BLE001
        pass
    return 1


def _flush_std_streams() -> bool:
    ok = True
    for stream in {id(s): s for s in (sys.stdout, sys.__stdout__, sys.stderr, sys.__stderr__)}.values():
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001
            ok = False
    return ok


def _run_main(code: str, main_path: str, *, _exit_code_of=_exit_code_of, _send=_send,
              _flush=_flush_std_streams, _close=os.close, _run_exitfuncs=atexit._run_exitfuncs) -> int:
    """Compile and run the program as __main__, then finalize like the interpreter. Returns the exit code.

    The compile result goes to the server on fd 4 (the setup pipe), which is closed before the
    program's first line runs: what arrives there cannot come from the program. Helpers are bound
    as default arguments, so a program that rewrites this module's globals changes nothing here.
    """
    try:
        compiled = compile(code, main_path, "exec", dont_inherit=True)  # no __future__ flags from us
    except BaseException as e:  # noqa: BLE001 - SyntaxError, ValueError (NUL bytes), MemoryError ...
        traceback.print_exception(type(e), e, None)
        _send(4, {"compile_error": type(e).__name__})
        _flush()
        return 1
    _send(4, {"ready": True})
    _close(4)

    error_type = None
    try:
        exec(compiled, sys.modules["__main__"].__dict__)
        exit_code = 0
    except SystemExit as e:
        exit_code = _exit_code_of(e)
        if exit_code:
            error_type = "SystemExit"
    except BaseException as e:  # noqa: BLE001 - exactly what the interpreter would print and exit 1 for
        error_type, exit_code = type(e).__name__, 1
        try:
            if e.__traceback__ is not None:  # drop our own frame: the traceback starts in main.py
                e.__traceback__ = e.__traceback__.tb_next
            sys.excepthook(type(e), e, e.__traceback__)  # the program may have installed its own hook
        except BaseException:  # noqa: BLE001
            _write(2, f"{error_type}: (traceback unavailable)\n".encode())

    # Interpreter shutdown order: wait for non-daemon threads, run atexit, flush std streams.
    for finalizer in (threading._shutdown, _run_exitfuncs):  # CPython too looks up threading._shutdown now
        try:
            finalizer()
        except BaseException:  # noqa: BLE001
            pass
    if not _flush() and exit_code == 0:
        exit_code = 120  # what CPython exits with when flushing stdout fails
    if error_type:
        _send(3, {"error_type": error_type})  # informational only: the status never depends on it
    return exit_code


def _child(req: dict, work: str, pipes: tuple[int, int, int, int], uid: int | None,
           cgroup: limits.Cgroup | None, seccomp: bytes | None, *, _exit=os._exit) -> None:
    """Body of the forked child. Always ends in os._exit: it must never return into server code."""
    exit_code = 125
    try:
        try:
            main_path = _lock_down(req, work, pipes, uid, cgroup, seccomp)
        except BaseException:  # noqa: BLE001 - our bug or resource exhaustion, not the program's fault
            _send(4, {"setup_error": traceback.format_exc()})
            return
        exit_code = _run_main(req["code"], main_path)
    finally:
        _exit(exit_code)


# ----------------------------------------------------------------------------------------------
# the server side of one program: fork, watch, classify, clean up


class _Capture:
    """Keeps the first `head` and the last `tail` bytes of a stream and counts what falls between."""

    def __init__(self, limit: int, tail: int) -> None:
        self.head_limit, self.tail_limit = limit - tail, tail
        self.head, self.tail, self.total = bytearray(), bytearray(), 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > self.tail_limit:
                del self.tail[:len(self.tail) - self.tail_limit]

    def text(self) -> str:
        dropped = self.total - len(self.head) - len(self.tail)
        marker = f"\n...[{dropped} bytes truncated]...\n" if dropped else ""
        return (bytes(self.head).decode("utf-8", "replace") + marker
                + bytes(self.tail).decode("utf-8", "replace"))


def _children() -> list[int]:
    """Direct children of this process (orphans reparent to us: we are PID 1 or a subreaper)."""
    try:
        with open(f"/proc/self/task/{os.getpid()}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _kill_leftovers(pid1: bool, pgid: int) -> bool:
    """SIGKILL and reap every process the program left behind. False if some refused to die in 5 s."""
    deadline = time.monotonic() + 5.0
    while True:
        # As PID 1 of our own namespace, kill(-1) hits every process but us in one go; otherwise
        # the program's process group and every orphan that was reparented to us (subreaper).
        for target in ((-1,) if pid1 else (-pgid, *_children())):
            try:
                os.kill(target, signal.SIGKILL)
            except OSError:
                pass  # ESRCH: nothing (left) to kill
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            return True  # no children at all: every descendant is gone
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)


def _drain(fd: int, capture: _Capture) -> str:
    """Read one chunk into `capture`. Returns "data", "empty" (nothing right now) or "eof"."""
    try:
        data = os.read(fd, 1 << 16)
    except BlockingIOError:
        return "empty"
    except OSError:
        return "eof"
    if not data:
        return "eof"
    capture.add(data)
    return "data"


def _records(text: str) -> list[dict]:
    """The JSON objects, one per line, in what a child wrote to a report pipe (other lines ignored)."""
    out = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


_ERROR_TYPE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,99}")


def _classify(timed_out: bool, wstatus: int, cpu_s: float, cpu_limit: int, memory_hit: bool | None,
              setup: dict, error_type: str | None) -> dict:
    """Map how the child ended to (status, exit_code, error_type), from what this server observed.

    timed_out, wstatus, cpu_s (the kernel's rusage) and memory_hit (the cgroup's event counters) are
    out of the program's reach; so is `setup`, the harness's record sent before the program's first
    line ran (compile result). `error_type` is what the program's process reported about its uncaught
    exception: a label only, never a status. memory_hit None means there is no cgroup to ask: then,
    as the only signal left, the program's own MemoryError counts (a weaker guarantee, see sandbox.py).
    """
    if timed_out:
        return {"status": "timeout", "exit_code": None, "error_type": None}
    signalled = os.WIFSIGNALED(wstatus)
    sig = os.WTERMSIG(wstatus) if signalled else 0
    code = -sig if signalled else os.WEXITSTATUS(wstatus)
    if memory_hit and code != 0:
        return {"status": "memory_limit", "exit_code": code, "error_type": "MemoryError"}
    if signalled:
        if sig in (signal.SIGXCPU, signal.SIGKILL) and cpu_s >= cpu_limit - 0.05:
            return {"status": "timeout", "exit_code": None, "error_type": None}  # hit RLIMIT_CPU
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return {"status": "killed", "exit_code": code, "error_type": name}
    if code == 0:
        return {"status": "ok", "exit_code": 0, "error_type": None}
    if "compile_error" in setup:
        return {"status": "syntax_error", "exit_code": code, "error_type": str(setup["compile_error"])[:100]}
    if memory_hit is None and error_type == "MemoryError":
        return {"status": "memory_limit", "exit_code": code, "error_type": error_type}
    return {"status": "runtime_error", "exit_code": code, "error_type": error_type}


def _remove_tree(path: str) -> None:
    """Delete a folder a program filled (fallback mode): any depth, no recursion, modes it chmod-ed away.

    Walks down with chdir so no path grows past PATH_MAX and no fd is held per level; every process
    of the program is dead, so nothing moves the folders while we walk.
    """
    if not os.path.lexists(path):
        return  # the program removed its own folder
    if not stat.S_ISDIR(os.lstat(path).st_mode):
        os.unlink(path)  # e.g. a symlink it put in place of its folder: remove the link, never follow it
        return
    os.chdir(path)
    names: list[str] = []  # the folders we are in, below `path`
    try:
        while True:
            try:
                entries = list(os.scandir("."))
            except PermissionError:
                os.chmod(".", 0o700)
                continue
            sub = next((e.name for e in entries if e.is_dir(follow_symlinks=False)), None)
            if sub is not None:
                try:
                    os.chdir(sub)
                except PermissionError:
                    os.chmod(sub, 0o700)
                    os.chdir(sub)
                names.append(sub)
                continue
            for e in entries:
                os.unlink(e.name)
            if not names:
                break
            os.chdir("..")
            os.rmdir(names.pop())
    finally:
        os.chdir("/")
    os.rmdir(path)


_CGROUP: limits.Cgroup | None = None
_SECCOMP: bytes | None = None


def run_one(req: dict, facts: dict) -> dict:
    """Run one program in a fresh child and return its result (or a setup error). Cleans up fully."""
    isolated = facts["namespaces"]
    uid = random.SystemRandom().randrange(*UID_RANGE) if facts["uid_drop"] else None
    if isolated:
        work = WORK_DIR
        os.mkdir(work, 0o700)
    else:
        work = tempfile.mkdtemp(prefix="minirlaif-sandbox-")
    with open(os.path.join(work, "main.py"), "w", encoding="utf-8", errors="replace") as f:
        f.write(req["code"])
    if uid is not None:
        os.chown(work, uid, uid)
        os.chown(os.path.join(work, "main.py"), uid, uid)
    cgroup = _CGROUP
    if cgroup is not None:
        cgroup.arm(req["memory_mb"])

    pipes = [os.pipe() for _ in range(4)]  # info, setup, stdout, stderr
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(req, work, tuple(w for _, w in pipes), uid, cgroup, _SECCOMP)  # never returns
    for _, w in pipes:
        os.close(w)
    try:
        return _finish(req, facts, pid, start, [r for r, _ in pipes], work, cgroup)
    except Exception as e:  # noqa: BLE001 - our failure after the program started: it must not raise
        _kill_leftovers(facts["pid1"], pid)
        return {"status": "killed", "exit_code": None, "error_type": "SandboxError", "stdout": "",
                "stderr": f"[sandbox] cleaning up after this program failed: {type(e).__name__}: {e}",
                "duration_s": round(time.monotonic() - start, 6), "retire": True}


def _finish(req: dict, facts: dict, pid: int, start: float, fds: list[int], work: str,
            cgroup: limits.Cgroup | None) -> dict:
    """Watch the child until it ends or times out, then classify, collect output and clean up."""
    limit = req["max_output_bytes"]
    info_fd, setup_fd, out_fd, err_fd = fds
    captures = {info_fd: _Capture(REPORT_TAIL, REPORT_TAIL), setup_fd: _Capture(REPORT_TAIL, 0),
                out_fd: _Capture(limit, limit // TAIL_BYTES_FRACTION),
                err_fd: _Capture(limit, limit // TAIL_BYTES_FRACTION)}
    sel = selectors.DefaultSelector()
    for fd in captures:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    try:
        pidfd = os.pidfd_open(pid)  # readable when the child exits: no polling, no SIGCHLD handler
        sel.register(pidfd, selectors.EVENT_READ)
    except (AttributeError, OSError):
        pidfd = None

    deadline = start + req["timeout_s"]
    timed_out = False
    while True:
        wpid, wstatus, rusage = os.wait4(pid, os.WNOHANG)
        if wpid:
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            os.kill(pid, signal.SIGKILL)
            _, wstatus, rusage = os.wait4(pid, 0)
            break
        for key, _ in sel.select(remaining if pidfd is not None else min(remaining, 0.002)):
            if key.fd != pidfd and _drain(key.fd, captures[key.fd]) == "eof":
                sel.unregister(key.fd)
    duration = time.monotonic() - start

    all_dead = _kill_leftovers(facts["pid1"], pid)
    for fd, capture in captures.items():  # every writer is dead now: read what is left in the pipe
        while _drain(fd, capture) == "data":
            pass
        os.close(fd)
    sel.close()
    if pidfd is not None:
        os.close(pidfd)

    memory_hit = cgroup.disarm() if cgroup is not None else None
    if facts["namespaces"]:
        _clean_scratch()
    else:
        _remove_tree(work)

    setup = next(iter(_records(captures[setup_fd].text())), {})
    if "setup_error" in setup:
        return {"setup_error": str(setup["setup_error"]), "retire": True}
    reported = [r.get("error_type") for r in _records(captures[info_fd].text())]
    error_type = reported[-1] if reported and isinstance(reported[-1], str) else None
    if error_type is not None and not _ERROR_TYPE.fullmatch(error_type):
        error_type = None
    cpu_s = rusage.ru_utime + rusage.ru_stime
    result = _classify(timed_out, wstatus, cpu_s, math.ceil(req["timeout_s"]) + 1, memory_hit, setup, error_type)
    result.update(stdout=captures[out_fd].text(), stderr=captures[err_fd].text(),
                  duration_s=round(duration, 6), retire=not all_dead)
    return result


# ----------------------------------------------------------------------------------------------


def main() -> None:
    global _CGROUP, _SECCOMP
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--namespaces", action="store_true", help="we were started by unshare (see top)")
    ap.add_argument("--host-ns", default="", help="host's 'net:[..],ipc:[..]' ns ids, to verify ours differ")
    ap.add_argument("--preload", default="", help="comma-separated modules to import once")
    ap.add_argument("--cgroup-name", default="minirlaif-sandbox", help="name of the server's memory cgroup")
    ap.add_argument("--without", default="", help="comma-separated: cgroup, seccomp (to test degraded modes)")
    args = ap.parse_args()

    # The protocol lives on private copies of stdin/stdout; fds 0/1 become /dev/null and stderr so
    # that nothing a library prints can corrupt it.
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    os.close(devnull)

    host_ns = dict(item.split(":", 1) for item in args.host_ns.split(",") if ":" in item)
    own_ns = lambda kind: os.readlink(f"/proc/self/ns/{kind}").split(":", 1)[1]  # noqa: E731
    facts = {
        "pid1": os.getpid() == 1,
        "network": "net" in host_ns and own_ns("net") != host_ns["net"],
        "ipc": "ipc" in host_ns and own_ns("ipc") != host_ns["ipc"],
        "uid_drop": os.geteuid() == 0,
        "private_tmp": False, "readonly_root": False, "hidden": [], "hidepid": False, "kept_in_scratch": [],
    }
    # Namespace mode needs all three: kill(-1) is only safe as PID 1 of our own PID namespace, and
    # the mounts below only touch our own mount namespace.
    facts["namespaces"] = args.namespaces and facts["pid1"] and facts["network"] and facts["uid_drop"]
    if facts["namespaces"]:
        facts.update(_setup_filesystem())
        if facts["ipc"]:
            _disable_sysv_ipc()
    else:
        try:
            _prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans of programs come to us, so we can kill them
        except OSError:
            pass
    if "cgroup" in args.without:
        facts.update(cgroup=0, cgroup_path=None, cgroup_problem="switched off (--without cgroup)")
    else:
        _CGROUP, cgroup_facts = limits.join_cgroup(facts["uid_drop"], args.cgroup_name)
        facts.update(cgroup_facts)
    _SECCOMP, facts["seccomp"] = (None, False) if "seccomp" in args.without else limits.probe_seccomp()
    # With a dropped uid, `import x` of a module we did not preload needs a world-readable install.
    facts["unreadable_paths"] = [p for p in _python_paths() if facts["uid_drop"] and not _readable_by_anyone(p)]
    facts["python_readable"] = not facts["unreadable_paths"]
    facts["preloaded"] = _preload([m for m in args.preload.split(",") if m])
    # Move everything imported so far out of the GC's reach: a collection in a child would otherwise
    # touch every object header and copy-on-write most of the server's heap (measured: ~15 ms).
    gc.freeze()
    facts["threads"] = len(os.listdir("/proc/self/task"))  # must be 1: we fork without exec

    def send(obj: dict) -> None:
        proto_out.write(json.dumps(obj).encode() + b"\n")
        proto_out.flush()

    send({"hello": facts})
    for line in proto_in:
        try:
            result = run_one(json.loads(line), facts)
        except Exception:  # noqa: BLE001 - report server bugs to the host instead of dying silently
            result = {"setup_error": traceback.format_exc(), "retire": True}
        send(result)
        if result.get("retire"):
            return


if __name__ == "__main__":
    main()
