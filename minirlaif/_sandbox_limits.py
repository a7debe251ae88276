"""Kernel limits of the sandbox: the fork server's memory cgroup, and the seccomp filter of each program.

Loaded by `_sandbox_worker.py` from its own folder (never imported by the host); it imports nothing
from minirlaif, so the three sandbox files can be copied into another project unchanged.

    cgroup, facts = join_cgroup(root=True, name="minirlaif-sandbox-123-1")   # once, in the server
    cgroup.arm(memory_mb); ...program runs...; hit = cgroup.disarm()         # per program
    program, works = probe_seccomp()                                         # once, in the server
    install_seccomp(program)                                                 # in each child
"""

from __future__ import annotations

import ctypes
import os
import struct
import time

PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_SPEC_ALLOW = 1, 4
CLONE_NEWUSER = 0x10000000

_libc = ctypes.CDLL(None, use_errno=True)
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.syscall.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_long, ctypes.c_void_p]  # seccomp(2) only
_exit = os._exit


# ----------------------------------------------------------------------------------------------
# memory: the fork server's cgroup


class Cgroup:
    """The fork server's memory cgroup (cgroup v2 `memory.max`, or v1 `memory.limit_in_bytes`).

    The server moves itself in once, so every program it forks starts inside (moving a process per
    program costs about 0.5 ms in v1, measured once). Before each program the limit is set to what the cgroup holds at that
    moment plus memory_mb; what the program's processes then charge counts against it: anonymous
    memory, its children's, page tables, files it writes to /tmp, /dev/shm or a memfd, pipe buffers.
    Going over OOM-kills a process of the program (each sets its OOM score to the maximum, so the
    killer picks them before the server; lowering the server's own needs CAP_SYS_RESOURCE, which a
    container may lack) or fails the allocating syscall with ENOMEM. Both are counted in the cgroup's
    event files, which the server reads after the program ended: a program cannot forge them. Between
    programs the limit is lifted.
    """

    def __init__(self, parent: str, version: int, name: str) -> None:
        self.path, self.version = os.path.join(parent, name), version
        self.events_before = 0
        self.limit = -1  # bytes; -1 = none (what a new cgroup starts with)

    @staticmethod
    def locate() -> tuple[str | None, int, str]:
        """(folder in which to make the server's cgroup, cgroup version, why not) for this process."""
        mounts = {}  # "v1"/"v2" -> (mount root, mount point)
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields, (fstype, _source, super_opts) = left.split(), right.split()[:3]
                if fstype == "cgroup2":
                    mounts.setdefault("v2", (fields[3], fields[4]))
                elif fstype == "cgroup" and "memory" in super_opts.split(","):
                    mounts.setdefault("v1", (fields[3], fields[4]))
        own = {}  # "v1"/"v2" -> our cgroup path
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if controllers == "":
                    own["v2"] = path
                elif "memory" in controllers.split(","):
                    own["v1"] = path
        for key, version in (("v1", 1), ("v2", 2)):
            if key not in mounts or key not in own or not own[key].startswith(mounts[key][0]):
                continue
            root, mountpoint = mounts[key]
            rel = own[key][len(root.rstrip("/")):].rstrip("/")
            mine = mountpoint + rel
            if version == 1 and os.path.exists(os.path.join(mine, "memory.limit_in_bytes")):
                return mine, 1, ""
            if version == 2:
                # v2 gives controllers only to cgroups without processes of their own: ours holds the
                # host process, so the server's cgroup goes beside it, in our parent.
                parent = mine if rel == "" else os.path.dirname(mine)
                try:
                    with open(os.path.join(parent, "cgroup.controllers")) as f:
                        if "memory" in f.read().split():
                            return parent, 2, ""
                except OSError:
                    pass
        return None, 0, "no memory cgroup (v1 or v2) that this process can extend"

    def create_and_join(self) -> None:
        """Make the cgroup and move this (server) process into it."""
        os.mkdir(self.path, 0o755)
        if self.version == 2:
            try:
                self._write("memory.swap.max", "0")  # nothing of a program is paged out past the limit
            except OSError:
                pass  # no swap accounting: without swap there is nothing to page out
        self._write("cgroup.procs", str(os.getpid()))

    def arm(self, memory_mb: int) -> None:
        """Before a program: allow memory_mb on top of what is charged now."""
        current = int(self._read("memory.current" if self.version == 2 else "memory.usage_in_bytes"))
        self.events_before = self._events()
        self._set_limit(current + (memory_mb << 20))

    def disarm(self) -> bool:
        """After a program (all its processes dead): lift the limit. True if the program hit it."""
        hit = self._events() > self.events_before
        self._set_limit(-1)
        return hit

    def _set_limit(self, limit: int) -> None:
        """Set the limit in bytes (-1: none). v1 with swap accounting also has a memory+swap limit,
        which must never be below the memory limit: raise it first, lower it last."""
        if self.version == 2:
            self._write("memory.max", "max" if limit < 0 else str(limit))
        else:
            raising = limit < 0 or 0 <= self.limit < limit
            names = ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
            for name in reversed(names) if raising else names:
                try:
                    self._write(name, str(limit))
                except OSError:
                    if name == "memory.limit_in_bytes":
                        raise  # memsw is absent when swap accounting is off: fine
        self.limit = limit

    def _events(self) -> int:
        """OOM kills plus refused charges so far (counters only grow)."""
        if self.version == 2:
            events = dict(line.split() for line in self._read("memory.events").splitlines() if line)
            return int(events.get("oom_kill", 0)) + int(events.get("max", 0))
        oom = dict(line.split() for line in self._read("memory.oom_control").splitlines() if line)
        return int(oom.get("oom_kill", 0)) + int(self._read("memory.failcnt"))

    def _write(self, name: str, value: str) -> None:
        with open(os.path.join(self.path, name), "w") as f:
            f.write(value)

    def _read(self, name: str) -> str:
        with open(os.path.join(self.path, name)) as f:
            return f.read()


# ----------------------------------------------------------------------------------------------
# seccomp: the system calls a program may not make


# Syscall numbers per audit arch. Refused with EPERM: kernel keyrings (they outlive the program and are
# shared per uid), new namespaces (a tmpfs mounted in its own user namespace, new network stacks),
# mounts, BPF, userfaultfd, perf, io_uring (it would bypass this filter). clone3 answers ENOSYS so
# glibc falls back to clone, whose flags we can inspect. Unix sockets: socket(AF_UNIX) is refused (no
# connecting to a host service's socket file); socketpair stays for stream/seqpacket (multiprocessing,
# asyncio) but not datagram, whose sendto() could name a host socket path.
_SECCOMP_ARCH = {
    "x86_64": {"arch": 0xC000003E, "x32_bit": 0x40000000, "seccomp": 317, "clone": 56, "clone3": 435, "socket": 41,
               "socketpair": 53, "deny": (248, 249, 250, 272, 308, 165, 166, 155, 321, 323, 298, 425)},
    "aarch64": {"arch": 0xC00000B7, "x32_bit": 0, "seccomp": 277, "clone": 220, "clone3": 435, "socket": 198,
                "socketpair": 199, "deny": (217, 218, 219, 97, 268, 40, 39, 41, 280, 282, 241, 425)},
}
_CLONE_NEW_NAMESPACES = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
AF_UNIX, SOCK_DGRAM, SOCK_TYPE_MASK = 1, 2, 0xF
_EPERM, _EACCES, _ENOSYS = 1, 13, 38


def seccomp_program() -> bytes | None:
    """The BPF filter for this machine's architecture, or None where we have no syscall table."""
    table = _SECCOMP_ARCH.get(os.uname().machine)
    if table is None:
        return None
    LD, JEQ, JGE, JSET, AND, RET = 0x20, 0x15, 0x35, 0x45, 0x54, 0x06  # BPF_LD|W|ABS, BPF_JMP|K ...
    ALLOW, ERRNO = 0x7FFF0000, 0x00050000
    NR, ARCH, ARG0, ARG1 = 0, 4, 16, 24  # offsets in struct seccomp_data (low 32 bits of each arg)
    code: list = []  # (op, jump-true label or 0, jump-false label or 0, k); labels resolved below

    def deny(errno: int) -> str:
        return f"ret{errno}"

    code += [(LD, 0, 0, ARCH), (JEQ, 0, deny(_EPERM), table["arch"]), (LD, 0, 0, NR)]
    if table["x32_bit"]:
        code.append((JGE, deny(_EPERM), 0, table["x32_bit"]))
    for nr in table["deny"]:
        code.append((JEQ, deny(_EPERM), 0, nr))
    code += [(JEQ, deny(_ENOSYS), 0, table["clone3"]),
             (JEQ, "clone", 0, table["clone"]),
             (JEQ, "socket", 0, table["socket"]),
             (JEQ, "socketpair", 0, table["socketpair"]),
             (RET, 0, 0, ALLOW),
             "clone", (LD, 0, 0, ARG0), (JSET, deny(_EPERM), 0, _CLONE_NEW_NAMESPACES), (RET, 0, 0, ALLOW),
             "socket", (LD, 0, 0, ARG0), (JEQ, deny(_EACCES), 0, AF_UNIX), (RET, 0, 0, ALLOW),
             "socketpair", (LD, 0, 0, ARG0), (JEQ, 0, "allow", AF_UNIX), (LD, 0, 0, ARG1),
             (AND, 0, 0, SOCK_TYPE_MASK), (JEQ, deny(_EACCES), 0, SOCK_DGRAM),
             "allow", (RET, 0, 0, ALLOW)]
    for errno in (_EPERM, _EACCES, _ENOSYS):
        code += [deny(errno), (RET, 0, 0, ERRNO | errno)]
    labels, position = {}, 0
    for item in code:
        if isinstance(item, str):
            labels[item] = position
        else:
            position += 1
    out, position = b"", 0
    for item in code:
        if isinstance(item, str):
            continue
        op, jt, jf, k = item
        rel = lambda label: 0 if label == 0 else labels[label] - position - 1  # noqa: E731
        out += struct.pack("HBBI", op, rel(jt), rel(jf), k)
        position += 1
    return out


def install_seccomp(program: bytes) -> None:
    """Load the filter for this process and every process it starts (needs NO_NEW_PRIVS set first).

    Through seccomp(2) with SECCOMP_FILTER_FLAG_SPEC_ALLOW where the kernel has it: otherwise a
    filtered process also gets the speculative-store-bypass mitigation where the CPU has one, which
    slows every program down, against side channels this sandbox does not claim to stop. (The test VM
    reports "vulnerable", i.e. no such mitigation, so the flag changed nothing measurable there.)
    """
    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

    prog = SockFprog(len(program) // 8, program)
    table = _SECCOMP_ARCH[os.uname().machine]
    if _libc.syscall(table["seccomp"], SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_SPEC_ALLOW,
                     ctypes.addressof(prog)) == 0:
        return
    if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp: {os.strerror(err)}")


def join_cgroup(root: bool, name: str) -> tuple[Cgroup | None, dict]:
    """Move this (server) process into a memory cgroup of its own, if this machine lets us make one.
    Returns the cgroup (None if not) and the facts to report: cgroup (version, 0 = none), cgroup_path,
    cgroup_problem."""
    if not root:
        return None, {"cgroup": 0, "cgroup_path": None, "cgroup_problem": "not running as root"}
    try:
        parent, version, problem = Cgroup.locate()
        if parent is None:
            return None, {"cgroup": 0, "cgroup_path": None, "cgroup_problem": problem}
        for stale in os.listdir(parent):  # left by servers that were killed: empty, so rmdir works
            if stale.startswith("minirlaif-sandbox-"):
                try:
                    os.rmdir(os.path.join(parent, stale))
                except OSError:
                    pass  # a live server is inside: EBUSY
        cgroup = Cgroup(parent, version, name)
        cgroup.create_and_join()
        cgroup.arm(64)
        cgroup.disarm()
    except (OSError, ValueError) as e:
        return None, {"cgroup": 0, "cgroup_path": None, "cgroup_problem": f"cannot make a memory cgroup ({e})"}
    return cgroup, {"cgroup": version, "cgroup_path": cgroup.path, "cgroup_problem": ""}


def probe_seccomp() -> tuple[bytes | None, bool]:
    """The filter, and whether a child can load it and it works (checked once, in a throwaway fork)."""
    program = seccomp_program()
    if program is None:
        return None, False
    pid = os.fork()
    if pid == 0:
        try:
            if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
                _exit(1)
            install_seccomp(program)
            refused = _libc.unshare(CLONE_NEWUSER) != 0 and ctypes.get_errno() == _EPERM
            _exit(0 if refused else 1)
        except BaseException:  # noqa: BLE001
            _exit(1)
    works = os.waitpid(pid, 0)[1] == 0
    return (program if works else None), works
