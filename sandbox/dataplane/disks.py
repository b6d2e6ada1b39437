"""Disks: one folder per instance; an image is a frozen copy of a disk.

Layout under the data plane's root (`<state_dir>/dataplane`, or a temporary folder):

    disks/<instance_id>/    the server's whole file system as the guest sees it (`/` of SFTP and exec)
    images/<image_id>/      a private image: the disk as it was when CreateImage was called
    bases/<platform>/       the disk of every public image of a platform (built on first use)
    hostkeys/<instance_id>  the server's SSH host key: outside the disk, so an image never carries it

Windows disks keep drive C: at `<disk>/C:` so that `C:\\qcloud\\sdk.config` is `/C:/qcloud/sdk.config`
over SFTP (as Windows' OpenSSH names it) and `<disk>/C:/qcloud/sdk.config` on the host.

Copies are real copies (not hard links): a server rewriting a file in place must never change
the image it came from, nor the servers cloned from that image.
"""

import os
import shutil
import stat
import threading
from pathlib import Path

LINUX_DIRS = ("etc", "root/.ssh", "tmp", "data", "run", "var/log", "home", "opt", "usr", "dev", "proc")
LINUX_LINKS = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}
WINDOWS_DIRS = ("C:/Windows/System32", "C:/Users/Administrator", "C:/qcloud", "C:/inetpub/wwwroot")
OS_RELEASE = {
    "CentOS": 'NAME="CentOS Linux"\nVERSION="7 (Core)"\nID="centos"\nVERSION_ID="7"\n',
    "TencentOS": 'NAME="TencentOS Server"\nVERSION="3.1 (TK4)"\nID="tencentos"\nVERSION_ID="3.1"\n',
    "Windows": 'NAME="Windows Server"\nVERSION="2019 Datacenter"\nID="windows"\n',
}
SOCKET_NAME = "sandbox-guest.sock"  # <disk>/run/sandbox-guest.sock: never copied into an image


def login_user(platform: str) -> str:
    return "Administrator" if platform == "Windows" else "root"


def home_dir(platform: str) -> str:
    """The login user's home as the guest names it (exec starts there)."""
    return "/C:/Users/Administrator" if platform == "Windows" else "/root"


def _skip_special(folder: str, names: list[str]) -> list[str]:
    """copytree's ignore: sockets, FIFOs and devices are not files an image can hold."""
    skipped = []
    for name in names:
        try:
            mode = os.lstat(os.path.join(folder, name)).st_mode
        except FileNotFoundError:
            skipped.append(name)
            continue
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
            skipped.append(name)
    return skipped


def copy_tree(source: Path, target: Path) -> None:
    """Copy a disk atomically: into a temporary sibling, then rename (a half copy is never seen)."""
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial, symlinks=True, ignore=_skip_special, copy_function=shutil.copy2)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


class Disks:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._base_lock = threading.Lock()  # clones run in worker threads; build each base once
        for folder in ("disks", "images", "bases", "hostkeys"):
            (root / folder).mkdir(parents=True, exist_ok=True)

    def disk(self, instance_id: str) -> Path:
        return self.root / "disks" / instance_id

    def image(self, image_id: str) -> Path:
        return self.root / "images" / image_id

    def host_key_path(self, instance_id: str) -> Path:
        return self.root / "hostkeys" / instance_id

    def has_disk(self, instance_id: str) -> bool:
        return self.disk(instance_id).is_dir()

    def has_image(self, image_id: str) -> bool:
        return self.image(image_id).is_dir()

    def base(self, platform: str) -> Path:
        """The disk of a fresh public image: an OS skeleton (the guests' files are added by the seed)."""
        base = self.root / "bases" / platform
        if base.is_dir():
            return base
        with self._base_lock:
            if not base.is_dir():
                self._build_base(base, platform)
        return base

    @staticmethod
    def _build_base(base: Path, platform: str) -> None:
        skeleton = base.with_name(f".{platform}.partial")
        shutil.rmtree(skeleton, ignore_errors=True)
        for folder in LINUX_DIRS:
            (skeleton / folder).mkdir(parents=True, exist_ok=True)
        if platform == "Windows":
            for folder in WINDOWS_DIRS:
                (skeleton / folder).mkdir(parents=True, exist_ok=True)
        for link, target in LINUX_LINKS.items():
            (skeleton / link).symlink_to(target)
        (skeleton / "tmp").chmod(0o1777)
        (skeleton / "root").chmod(0o700)
        etc = skeleton / "etc"
        (etc / "os-release").write_text(OS_RELEASE.get(platform, OS_RELEASE["CentOS"]))
        (etc / "hosts").write_text("127.0.0.1   localhost localhost.localdomain\n")
        (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
        (etc / "group").write_text("root:x:0:\n")
        (etc / "resolv.conf").write_text("")
        skeleton.rename(base)

    def clone(self, image_id: str, instance_id: str, platform: str) -> Path:
        """A new disk for an instance launched from an image (a private image's files, else the public base)."""
        source = self.image(image_id) if self.has_image(image_id) else self.base(platform)
        disk = self.disk(instance_id)
        copy_tree(source, disk)
        return disk

    def personalize(self, instance_id: str, host_name: str, authorized_keys: list[str]) -> None:
        """What cloud-init does on first boot: the host name and the login key pairs."""
        disk = self.disk(instance_id)
        (disk / "etc").mkdir(exist_ok=True)
        (disk / "etc" / "hostname").write_text(f"{host_name}\n")
        ssh = disk / "root" / ".ssh"
        ssh.mkdir(parents=True, exist_ok=True)
        (ssh / "authorized_keys").write_text("".join(f"{key}\n" for key in authorized_keys))

    def snapshot(self, instance_id: str, image_id: str, platform: str = "CentOS") -> Path:
        """Freeze the instance's disk as an image, now (a disk never created is the platform's base)."""
        source = self.disk(instance_id) if self.has_disk(instance_id) else self.base(platform)
        image = self.image(image_id)
        copy_tree(source, image)
        return image

    def remove_disk(self, instance_id: str) -> None:
        shutil.rmtree(self.disk(instance_id), ignore_errors=True)
        self.host_key_path(instance_id).unlink(missing_ok=True)

    def remove_image(self, image_id: str) -> None:
        shutil.rmtree(self.image(image_id), ignore_errors=True)

    def wipe(self) -> None:
        """Forget every disk, image and host key (the cloud was reset); public bases stay."""
        for folder in ("disks", "images", "hostkeys"):
            shutil.rmtree(self.root / folder, ignore_errors=True)
            (self.root / folder).mkdir(parents=True, exist_ok=True)


MAX_SYMLINKS = 40  # as Linux' ELOOP limit


class EscapeError(OSError):
    """A guest path that cannot be resolved inside its disk (too many symlinks)."""


def resolve_in_root(root: Path, path: str, cwd: str = "/", follow_last: bool = True) -> Path:
    """The host path of a guest path, resolved as if `root` were `/` (like openat2's RESOLVE_IN_ROOT).

    `..` stops at the root and every symlink is read and followed inside the root (an absolute
    target starts again from the root), so no path, however crafted, names a file outside it.
    With `follow_last=False` the last component is not followed (lstat, remove, rename, readlink).
    """
    pending = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if not path.replace("\\", "/").startswith("/"):
        pending = [p for p in cwd.split("/") if p not in ("", ".")] + pending
    pending.reverse()  # a stack: the next component is at the end
    resolved: list[str] = []
    hops = 0
    while pending:
        part = pending.pop()
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        if (pending or follow_last) and candidate.is_symlink():
            hops += 1
            if hops > MAX_SYMLINKS:
                raise EscapeError(40, "Too many levels of symbolic links", path)
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            pending.extend(reversed([p for p in target.split("/") if p not in ("", ".")]))
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


def guest_path(root: Path, host_path: Path) -> str:
    """The guest's name of a host path inside `root` (`/` for the root itself)."""
    relative = host_path.relative_to(root).as_posix()
    return "/" if relative == "." else f"/{relative}"
