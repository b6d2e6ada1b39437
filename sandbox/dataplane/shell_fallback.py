"""The exec fallback: a small interpreter of the commands guests need, for kernels without user namespaces.

Supported: `cmd && cmd`, `||`, `;`, `> file`, `>> file`, `2>/dev/null`, `2>&1`, and the commands
cd, pwd, echo, cat, test / [, cp, mv, rm, mkdir, touch, ls, sed -i, true, false, hostname, whoami,
curl (from the server's private address, to the port the sandbox serves the real port at; curl's exit
codes) and the service managers pm2, systemctl, powershell, iisreset (answered by the guest supervisor).
Every path is resolved inside the disk.
"""

import re
import shlex
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sandbox.dataplane.disks import resolve_in_root

if TYPE_CHECKING:
    from sandbox.dataplane.shell import CommandResult, Guest

OPERATORS = {"&&", "||", ";"}
SERVICE_MANAGERS = {"pm2", "systemctl", "powershell", "iisreset"}


class _Failure(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class _Session:
    def __init__(self, guest: "Guest") -> None:
        self.guest = guest
        self.cwd = guest.home
        self.stdout = bytearray()
        self.stderr = bytearray()

    def path(self, name: str, follow_last: bool = True) -> Path:
        return resolve_in_root(self.guest.disk, name, self.cwd, follow_last)

    async def run(self, argv: list[str]) -> tuple[int, bytes]:
        """One simple command: its exit code and its standard output."""
        name, args = argv[0], argv[1:]
        if name in SERVICE_MANAGERS:
            code, output = await self.guest.control(argv, self.cwd)
            return code, output.encode()
        handler: Callable[[list[str]], Awaitable[bytes] | bytes] | None = getattr(self, f"cmd_{name}", None)
        if name == "[":
            handler = self.cmd_test
        if handler is None:
            raise _Failure(f"sh: {name}: not found (the sandbox's fallback shell)", 127)
        result = handler(args)
        if not isinstance(result, bytes):
            result = await result
        return 0, result

    # ---- commands ---------------------------------------------------------------------------------
    def cmd_true(self, _: list[str]) -> bytes:
        return b""

    def cmd_false(self, _: list[str]) -> bytes:
        raise _Failure("", 1)

    def cmd_pwd(self, _: list[str]) -> bytes:
        return f"{self.cwd}\n".encode()

    def cmd_cd(self, args: list[str]) -> bytes:
        target = args[0] if args else self.guest.home
        if not self.path(target).is_dir():
            raise _Failure(f"cd: {target}: No such file or directory", 2)
        self.cwd = "/" + self.path(target).relative_to(self.guest.disk).as_posix().lstrip(".")
        return b""

    def cmd_echo(self, args: list[str]) -> bytes:
        newline = "\n"
        if args and args[0] == "-n":
            args, newline = args[1:], ""
        return (" ".join(args) + newline).encode()

    def cmd_hostname(self, _: list[str]) -> bytes:
        return f"{self.guest.host_name}\n".encode()

    def cmd_whoami(self, _: list[str]) -> bytes:
        return f"{self.guest.environment()['USER']}\n".encode()

    def cmd_cat(self, args: list[str]) -> bytes:
        out = bytearray()
        for name in _operands(args):
            try:
                out += self.path(name).read_bytes()
            except OSError:
                raise _Failure(f"cat: {name}: No such file or directory") from None
        return bytes(out)

    def cmd_test(self, args: list[str]) -> bytes:
        if args and args[-1] == "]":
            args = args[:-1]
        negate = bool(args) and args[0] == "!"
        args = args[1:] if negate else args
        if len(args) == 2 and args[0] in ("-f", "-d", "-e", "-s"):
            path = self.path(args[1])
            ok = {"-f": path.is_file, "-d": path.is_dir, "-e": path.exists}.get(args[0], lambda: False)()
            if args[0] == "-s":
                ok = path.is_file() and path.stat().st_size > 0
        elif len(args) == 3 and args[1] in ("=", "==", "!="):
            ok = (args[0] == args[2]) != (args[1] == "!=")
        elif len(args) == 2 and args[0] in ("-n", "-z"):
            ok = bool(args[1]) == (args[0] == "-n")
        else:
            ok = len(args) == 1 and bool(args[0])
        if ok == negate:
            raise _Failure("", 1)
        return b""

    def cmd_mkdir(self, args: list[str]) -> bytes:
        for name in _operands(args):
            self.path(name).mkdir(parents="-p" in args, exist_ok="-p" in args)
        return b""

    def cmd_touch(self, args: list[str]) -> bytes:
        for name in _operands(args):
            self.path(name).touch()
        return b""

    def cmd_rm(self, args: list[str]) -> bytes:
        for name in _operands(args):
            path = self.path(name, follow_last=False)
            if path.is_dir() and not path.is_symlink():
                if not any(flag in args for flag in ("-r", "-rf", "-fr", "-R")):
                    raise _Failure(f"rm: cannot remove '{name}': Is a directory")
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
            elif not any(flag.startswith("-") and "f" in flag for flag in args):
                raise _Failure(f"rm: cannot remove '{name}': No such file or directory")
        return b""

    def cmd_cp(self, args: list[str]) -> bytes:
        *sources, target = _operands(args)
        destination = self.path(target)
        for name in sources:
            source = self.path(name)
            into = destination / source.name if destination.is_dir() else destination
            if source.is_dir():
                shutil.copytree(source, into, symlinks=True, dirs_exist_ok=True)
            elif source.is_file():
                shutil.copy2(source, into)
            else:
                raise _Failure(f"cp: cannot stat '{name}': No such file or directory")
        return b""

    def cmd_mv(self, args: list[str]) -> bytes:
        *sources, target = _operands(args)
        destination = self.path(target)
        for name in sources:
            source = self.path(name, follow_last=False)
            if not (source.exists() or source.is_symlink()):
                raise _Failure(f"mv: cannot stat '{name}': No such file or directory")
            source.replace(destination / source.name if destination.is_dir() else destination)
        return b""

    def cmd_ls(self, args: list[str]) -> bytes:
        names = _operands(args) or ["."]
        out = []
        for name in names:
            path = self.path(name)
            if not path.exists():
                raise _Failure(f"ls: cannot access '{name}': No such file or directory", 2)
            entries = sorted(p.name for p in path.iterdir()) if path.is_dir() else [name]
            out += [e for e in entries if "-a" in args or not e.startswith(".")]
        return "".join(f"{e}\n" for e in out).encode()

    def cmd_sed(self, args: list[str]) -> bytes:
        """`sed -i 's/OLD/NEW/[g]' FILE...` (the only sed the guide's procedures use)."""
        if not args or not args[0].startswith("-i"):
            raise _Failure("sed: only `sed -i 's/old/new/[g]' file` is supported by the fallback shell", 2)
        rest = [a for a in args[1:] if a != "-e"]
        script, files = rest[0], rest[1:]
        match = re.fullmatch(r"s(.)(.*?)(?<!\\)\1(.*?)(?<!\\)\1(g?)", script)
        if match is None:
            raise _Failure(f"sed: unsupported expression {script!r}", 1)
        separator, old, new, flags = match.groups()
        old = old.replace(f"\\{separator}", separator)
        new = re.sub(r"\\(\d)", r"\\g<\1>", new.replace(f"\\{separator}", separator)).replace("&", r"\g<0>")
        for name in files:
            path = self.path(name)
            text = path.read_text()
            path.write_text(re.sub(old, new, text, count=0 if flags else 1, flags=re.MULTILINE))
        return b""

    async def cmd_curl(self, args: list[str]) -> bytes:
        """curl's options the guides use; curl's exit codes (7 refused, 28 timed out, 52 empty, 56 reset, 22 -f)."""
        from sandbox.dataplane.net import http_probe

        request = _curl_options(args)
        url = request["url"]
        if not url:
            raise _Failure("curl: no URL specified!", 2)
        method = request["method"] or ("POST" if request["data"] is not None else "GET")
        body = request["data"].encode() if request["data"] is not None else None
        timeout = request["timeout"]
        try:
            answer = await http_probe(
                self.guest.private_ip,
                url,
                method,
                body=body,
                headers=request["headers"],
                timeout=timeout,
                connect_port=lambda port: self.guest.port_map.get(port, port),
            )
        except TimeoutError:
            message = f"Operation timed out after {int(timeout * 1000)} milliseconds"
            raise self._curl_error(request, 28, message) from None
        except ConnectionRefusedError:
            raise self._curl_error(request, 7, f"Failed to connect to {_host_port(url)}: Connection refused") from None
        except ConnectionResetError as error:
            empty = "without an HTTP answer" in str(error)
            reason = (52, "Empty reply from server") if empty else (56, "Recv failure: Connection reset by peer")
            raise self._curl_error(request, *reason) from None
        except ValueError:
            raise self._curl_error(request, 3, "URL using bad/illegal format or missing URL") from None
        except OSError as error:
            raise self._curl_error(request, 7, f"Failed to connect to {_host_port(url)}: {error}") from None
        if request["fail"] and answer.status >= 400:
            raise self._curl_error(request, 22, f"The requested URL returned error: {answer.status}")
        content = answer.body
        output = request["output"]
        if output is not None and output != "/dev/null":
            self.path(output).write_bytes(content)
        content = b"" if output is not None else content
        return content + request["write_out"].replace("%{http_code}", str(answer.status)).encode()

    @staticmethod
    def _curl_error(request: dict[str, Any], code: int, message: str) -> "_Failure":
        quiet = request["silent"] and not request["show_error"]
        return _Failure("" if quiet else f"curl: ({code}) {message}", code)


_CURL_VALUE_OPTIONS = {
    "-X": "method", "--request": "method", "-d": "data", "--data": "data", "--data-binary": "data",
    "--data-raw": "data", "-H": "header", "--header": "header", "-o": "output", "--output": "output",
    "-w": "write_out", "--write-out": "write_out", "-m": "timeout", "--max-time": "timeout",
    "--connect-timeout": "connect_timeout", "--interface": "interface",
}  # fmt: skip
_CURL_FLAGS = {"s": "silent", "S": "show_error", "f": "fail"}
_CURL_LONG_FLAGS = {"--silent": "silent", "--show-error": "show_error", "--fail": "fail"}


def _curl_options(args: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {
        "method": None, "data": None, "headers": {}, "output": None, "write_out": "", "timeout": 300.0,
        "url": None, "silent": False, "show_error": False, "fail": False,
    }  # fmt: skip
    iterator = iter(args)
    for arg in iterator:
        name = _CURL_VALUE_OPTIONS.get(arg)
        if name is None and arg.startswith("-") and not arg.startswith("--") and arg[-1:] in "XdHowm" and len(arg) > 2:
            for letter in arg[1:-1]:  # a cluster like -sSX POST: flags, then one option taking a value
                if letter in _CURL_FLAGS:
                    options[_CURL_FLAGS[letter]] = True
            name = _CURL_VALUE_OPTIONS.get(f"-{arg[-1]}")
        if name is not None:
            value = next(iterator, "")
            if name == "header":
                key, _, text = value.partition(":")
                options["headers"][key.strip()] = text.strip()
            elif name == "timeout":
                options["timeout"] = float(value)
            elif name not in ("connect_timeout", "interface"):
                options[name] = value
        elif arg in _CURL_LONG_FLAGS:
            options[_CURL_LONG_FLAGS[arg]] = True
        elif arg.startswith("-") and not arg.startswith("--") and len(arg) > 1:
            for letter in arg[1:]:
                if letter in _CURL_FLAGS:
                    options[_CURL_FLAGS[letter]] = True
        elif not arg.startswith("-"):
            options["url"] = arg if "://" in arg else f"http://{arg}"
    return options


def _host_port(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname} port {parts.port or 80}"


def _operands(args: list[str]) -> list[str]:
    return [a for a in args if not a.startswith("-") or a == "-"]


def _pipeline(tokens: list[str]) -> list[tuple[str, list[str]]]:
    """[(operator before it, tokens of the simple command)]."""
    commands: list[tuple[str, list[str]]] = []
    operator, current = ";", []
    for token in tokens:
        if token in OPERATORS:
            commands.append((operator, current))
            operator, current = token, []
        else:
            current.append(token)
    commands.append((operator, current))
    return [(op, argv) for op, argv in commands if argv]


async def interpret(guest: "Guest", command: str) -> "CommandResult":
    from sandbox.dataplane.shell import CommandResult

    session = _Session(guest)
    try:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|<>")
        lexer.whitespace_split = True
        tokens = list(lexer)
    except ValueError as error:
        return CommandResult(2, b"", f"sh: syntax error: {error}\n".encode())
    code = 0
    for operator, argv in _pipeline(tokens):
        if (operator == "&&" and code != 0) or (operator == "||" and code == 0):
            continue
        code = await _run_with_redirects(session, argv)
    return CommandResult(code, bytes(session.stdout), bytes(session.stderr))


async def _run_with_redirects(session: _Session, argv: list[str]) -> int:
    words, target, append, quiet_errors, merge = [], None, False, False, False
    index = 0
    while index < len(argv):
        word = argv[index]
        if word in (">", ">>") and index + 1 < len(argv):
            target, append = argv[index + 1], word == ">>"
            index += 2
            continue
        if word == "2" and index + 2 < len(argv) and argv[index + 1] in (">", ">&"):
            quiet_errors = argv[index + 2] == "/dev/null"
            merge = argv[index + 2] == "1" or argv[index + 1] == ">&"
            index += 3
            continue
        words.append(word)
        index += 1
    if not words:
        return 0
    if "|" in words:
        session.stderr += b"sh: pipes are not supported by the sandbox's fallback shell\n"
        return 2
    try:
        code, output = await session.run(words)
        error = b""
    except _Failure as failure:
        code, output, error = failure.code, b"", (f"{failure}\n".encode() if str(failure) else b"")
    except OSError as failure:
        code, output, error = 1, b"", f"{words[0]}: {failure.strerror or failure}\n".encode()
    if merge:
        output, error = output + error, b""
    if target is not None and target != "/dev/null":
        path = session.path(target)
        with path.open("ab" if append else "wb") as file:
            file.write(output)
    elif target is None:
        session.stdout += output
    if not quiet_errors:
        session.stderr += error
    return code
