"""Can this executable run on the host? What `metaplug install` checks before it names a file in a conflist.

The runtime execs the conflist's `type` on the HOST, outside any container install ran in. So the file must be an
ELF for this machine, or a script whose interpreter exists on the host. A console script made by pip names its
virtualenv's Python in the shebang (`#!/opt/venv/bin/python`), which a node without that venv does not have: every pod
would fail with `env: '/opt/cni/bin/metaplug': No such file or directory`. Daemon mode requires a static ELF (no
program interpreter at all), which runs on any host of the same architecture.

`host_root` is where the host's root filesystem is seen (default `/`: install runs on the host itself); symlinks are
resolved inside it.
"""

from __future__ import annotations

import os
import platform
import stat
import struct

ELF_MAGIC = b"\x7fELF"
PT_INTERP = 3
MAX_SYMLINKS = 40
# platform.machine() -> ELF e_machine (the architectures a node is likely to have)
E_MACHINE = {"x86_64": 62, "amd64": 62, "aarch64": 183, "arm64": 183, "armv7l": 40, "armv6l": 40, "i686": 3,
             "i386": 3, "ppc64le": 21, "ppc64": 21, "s390x": 22, "riscv64": 243}
STANDARD_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


def host_path(host_root: str, path: str) -> str | None:
    """`path` as the host sees it, seen from here: every symlink resolved inside `host_root`; None when a component
    is missing."""
    root = os.path.abspath(host_root)
    parts = [p for p in path.split("/") if p]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        here = os.path.join(root, *resolved, part)
        try:
            st = os.lstat(here)
        except OSError:
            return None
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > MAX_SYMLINKS:
                return None
            target = os.readlink(here)
            parts = [p for p in target.split("/") if p] + parts
            if target.startswith("/"):
                resolved = []
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


def _elf_interpreter(head: bytes, f_read_at: _ReadAt) -> tuple[int, str | None] | str:
    """(e_machine, program interpreter or None for a static binary), or a problem."""
    if len(head) < 64:
        return "truncated ELF header"
    cls, data = head[4], head[5]
    if cls not in (1, 2) or data not in (1, 2):
        return "unknown ELF class or byte order"
    order = "<" if data == 1 else ">"
    machine = struct.unpack_from(order + "H", head, 18)[0]
    if cls == 2:
        phoff, = struct.unpack_from(order + "Q", head, 32)
        phentsize, phnum = struct.unpack_from(order + "HH", head, 54)
    else:
        phoff, = struct.unpack_from(order + "I", head, 28)
        phentsize, phnum = struct.unpack_from(order + "HH", head, 42)
    for i in range(phnum):
        ph = f_read_at(phoff + i * phentsize, phentsize)
        if len(ph) < (56 if cls == 2 else 32):
            return "truncated ELF program header"
        if struct.unpack_from(order + "I", ph, 0)[0] != PT_INTERP:
            continue
        if cls == 2:
            offset, = struct.unpack_from(order + "Q", ph, 8)
            size, = struct.unpack_from(order + "Q", ph, 32)
        else:
            offset, = struct.unpack_from(order + "I", ph, 4)
            size, = struct.unpack_from(order + "I", ph, 16)
        return machine, f_read_at(offset, min(size, 4096)).split(b"\0", 1)[0].decode(errors="replace")
    return machine, None


class _ReadAt:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __call__(self, offset: int, size: int) -> bytes:
        return os.pread(self.fd, size, offset)


def host_problem(path: str, *, host_root: str = "/", static_only: bool = False, _depth: int = 0) -> str | None:
    """Why `path` (a file here) could not be executed on the host, or None when it can."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file"
    if not st.st_mode & 0o111:
        return f"{path} is not executable"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    try:
        head = os.pread(fd, 256, 0)
        if head.startswith(ELF_MAGIC):
            elf = _elf_interpreter(head[:64], _ReadAt(fd))
        elif head.startswith(b"#!"):
            elf = None
        else:
            return f"{path} is neither an ELF executable nor a script (#!)"
    finally:
        os.close(fd)
    if isinstance(elf, str):
        return f"{path}: {elf}"
    if elf is not None:
        machine, interpreter = elf
        wanted = E_MACHINE.get(platform.machine().lower())
        if wanted is not None and machine != wanted:
            return f"{path} is an ELF for another architecture (e_machine {machine}, this node is {platform.machine()})"
        if interpreter is None:
            return None  # static: runs on any host of this architecture
        if static_only:
            return f"{path} is dynamically linked (program interpreter {interpreter}); a static build is required"
        if host_path(host_root, interpreter) is None:
            return f"{path} needs the program interpreter {interpreter}, which the host does not have"
        return None
    if static_only:
        return f"{path} is a script; a static executable is required"
    return _script_problem(path, head, host_root, _depth)


def _script_problem(path: str, head: bytes, host_root: str, depth: int) -> str | None:
    line = head[2:].split(b"\n", 1)[0].decode(errors="replace").strip()
    words = line.split()
    if not words:
        return f"{path}: empty #! line"
    interpreter = words[0]
    if os.path.basename(interpreter) == "env" and len(words) > 1 and not words[1].startswith("-"):
        # `#!/usr/bin/env python3`: searched on the runtime's PATH; check the usual directories
        program = words[1]
        if host_path(host_root, interpreter) is None:
            return f"{path}: its interpreter {interpreter} does not exist on the host"
        for d in STANDARD_PATH:
            found = host_path(host_root, os.path.join(d, program))
            if found is not None:
                return _interpreter_problem(path, found, host_root, depth)
        return f"{path}: `{line}` finds no {program} on the host ({':'.join(STANDARD_PATH)})"
    found = host_path(host_root, interpreter)
    if found is None:
        return f"{path}: its interpreter {interpreter} does not exist on the host"
    return _interpreter_problem(path, found, host_root, depth)


def _interpreter_problem(path: str, interpreter: str, host_root: str, depth: int) -> str | None:
    if depth >= 2:
        return f"{path}: interpreters nested too deep"
    why = host_problem(interpreter, host_root=host_root, _depth=depth + 1)
    return None if why is None else f"{path}: its interpreter cannot run: {why}"
