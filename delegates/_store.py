"""mp-host-local's on-disk store, laid out like the reference host-local's so either plugin can read it:

    <dataDir>/<network name>/<ip>                one file per allocated address: "containerID\\r\\nifname"
    <dataDir>/<network name>/last_reserved_ip.N  the last address handed out from range set N (round robin)
    <dataDir>/<network name>/lock                flock'ed for the whole of every operation (cni.md 23)

The reference writes "\\r\\n" between the two fields; files holding only a container ID (old reference versions)
are read too. The network name is validated before it becomes a directory (cni.md 5), so it cannot escape dataDir.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
from collections.abc import Iterator

from metaplug_delegates._ranges import IPAddr

from metaplug.cni import files
from metaplug.cni.errors import IO_FAILURE, CniError

LAST_RESERVED_PREFIX = "last_reserved_ip."
LOCK_FILE = "lock"
LINE_BREAK = "\r\n"


class Store:
    """The allocations of one network. Use every method inside `with store.locked():`."""

    def __init__(self, data_dir: str, network: str) -> None:
        self.data_dir = data_dir
        self.dir = os.path.join(data_dir, network)

    def exists(self) -> bool:
        return os.path.isdir(self.dir)

    @contextlib.contextmanager
    def locked(self) -> Iterator[Store]:
        """Create the directory if needed and hold its exclusive lock."""
        try:
            files.make_dirs(self.dir)  # 0700 and files 0600 whatever the umask (the reference: 0755/0644)
            fd = files.open_private(os.path.join(self.dir, LOCK_FILE), os.O_RDWR)
        except OSError as exc:
            raise _io("cannot open the IPAM store", exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield self
        finally:
            os.close(fd)  # closing releases the flock

    def reserve(self, ip: IPAddr, container_id: str, ifname: str, range_id: int) -> bool:
        """Claim `ip` for container_id/ifname; False when it is taken. Records it as range set `range_id`'s last."""
        path = os.path.join(self.dir, str(ip))
        try:
            fd = files.open_private(path, os.O_WRONLY | os.O_EXCL)
        except FileExistsError:
            return False
        except OSError as exc:
            raise _io(f"cannot reserve {ip}", exc) from None
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(container_id.strip() + LINE_BREAK + ifname)
            self._write(f"{LAST_RESERVED_PREFIX}{range_id}", str(ip))
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise _io(f"cannot reserve {ip}", exc) from None
        return True

    def last_reserved(self, range_id: int) -> IPAddr | None:
        try:
            raw = files.read_file(os.path.join(self.dir, f"{LAST_RESERVED_PREFIX}{range_id}"))
            return ipaddress.ip_address(raw.decode().strip())
        except (OSError, ValueError):
            return None

    def owners(self) -> dict[IPAddr, tuple[str, str]]:
        """Every allocation: address -> (containerID, ifname); ifname is "" in old single-field files."""
        out: dict[IPAddr, tuple[str, str]] = {}
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return out
        except OSError as exc:
            raise _io("cannot list the IPAM store", exc) from None
        for name in names:
            try:
                ip = ipaddress.ip_address(name)
            except ValueError:
                continue  # lock, last_reserved_ip.N, anything else
            try:
                fields = files.read_file(os.path.join(self.dir, name)).decode(errors="replace").split()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise _io(f"cannot read allocation {name}", exc) from None
            out[ip] = (fields[0] if fields else "", fields[1] if len(fields) > 1 else "")
        return out

    def owner_of(self, ip: IPAddr) -> tuple[str, str] | None:
        return self.owners().get(ip)

    def get_by_id(self, container_id: str, ifname: str) -> list[IPAddr]:
        """The addresses of container_id/ifname; when there are none, those of old single-field files holding
        only this container ID (the reference's backward compatibility)."""
        owners = self.owners()
        cid = container_id.strip()
        found = [ip for ip, owner in owners.items() if owner == (cid, ifname)]
        if not found:
            found = [ip for ip, owner in owners.items() if owner == (cid, "")]
        return sorted(found, key=lambda ip: (ip.version, int(ip)))

    def release(self, ip: IPAddr) -> None:
        """Forget `ip`; already gone is fine."""
        try:
            os.unlink(os.path.join(self.dir, str(ip)))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _io(f"cannot release {ip}", exc) from None

    def release_by_id(self, container_id: str, ifname: str) -> list[IPAddr]:
        """Release every address of container_id/ifname; the list of released ones (empty: nothing to do)."""
        released = self.get_by_id(container_id, ifname)
        for ip in released:
            self.release(ip)
        return released

    def _write(self, name: str, text: str) -> None:
        files.atomic_write(os.path.join(self.dir, name), text.encode(), durable=False)  # a hint, as the reference's


def _io(msg: str, exc: OSError) -> CniError:
    return CniError(IO_FAILURE, msg, f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))
