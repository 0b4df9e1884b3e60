#!/usr/bin/env python3
"""Install mlx-fleet as a launchd agent: render the plist template for this machine.

    python deploy/install.py --config ~/fleet.toml [--venv .venv]
        [--out ~/Library/LaunchAgents/com.mlx-fleet.server.plist] [--print] [--load]

Every path in the plist is made absolute (launchd neither expands `~` nor knows the venv), the
log directory is created (launchd does not create it), the plist is written and checked by
parsing it back, and the `launchctl` commands to start and stop the service are printed. With
`--print` the plist goes to stdout and nothing is written. Only `--load` runs `launchctl`, and
only on macOS.

Standard library only: it runs with any Python 3.11+, inside the venv or not.
"""

from __future__ import annotations

import argparse
import os
import plistlib
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from xml.parsers.expat import ExpatError
from xml.sax.saxutils import escape

LABEL = "com.mlx-fleet.server"
HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / f"{LABEL}.plist.template"
DEFAULT_VENV = HERE.parent / ".venv"
DEFAULT_OUT = Path("~/Library/LaunchAgents") / f"{LABEL}.plist"
DEFAULT_LOG_DIR = Path("~/Library/Logs/mlx-fleet")
# launchd starts jobs with PATH=/usr/bin:/bin:/usr/sbin:/sbin; add the venv and Homebrew.
SYSTEM_PATH = ("/opt/homebrew/bin", "/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin")
PLACEHOLDERS = ("MLX_FLEET", "CONFIG", "WORKDIR", "LOG_DIR", "PATH")

_PLACEHOLDER = re.compile(r"\{\{([A-Za-z_][A-Za-z0-9_]*)\}\}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# launchctl bootout returns before the job has stopped (it may drain for ExitTimeOut).
_BOOTOUT_WAIT_SECONDS = 75.0


class InstallError(Exception):
    """A problem the user has to fix; main() prints it without a traceback."""


def render(template_text: str, values: dict[str, str]) -> str:
    """Fill every `{{NAME}}` in the template with its value, XML-escaped.

    Refuses (InstallError) a placeholder with no value, a value with no placeholder (a typo in
    a name would otherwise pass silently), an empty value or one with control characters, and
    anything left that looks like a malformed placeholder (`{{ CONFIG }}`, `{{CONFIG}`).
    """
    names = set(_PLACEHOLDER.findall(template_text))
    unfilled = sorted(names - values.keys())
    if unfilled:
        raise InstallError(f"no value for placeholder(s): {', '.join('{{%s}}' % n for n in unfilled)}")
    unknown = sorted(values.keys() - names)
    if unknown:
        raise InstallError(f"the template has no placeholder(s) {', '.join('{{%s}}' % n for n in unknown)}")
    for name in sorted(names):
        value = values[name]
        if not isinstance(value, str) or not value:
            raise InstallError(f"{{{{{name}}}}}: the value must be a non-empty string, not {value!r}")
        if _CONTROL.search(value):
            raise InstallError(f"{{{{{name}}}}}: the value {value!r} contains control characters")
    leftover = _PLACEHOLDER.sub("", template_text)
    if "{{" in leftover or "}}" in leftover:
        line = next(ln for ln in leftover.splitlines() if "{{" in ln or "}}" in ln)
        raise InstallError(f"malformed placeholder in the template: {line.strip()!r}")
    return _PLACEHOLDER.sub(lambda m: escape(values[m.group(1)]), template_text)


def build_values(
    config: Path,
    venv: Path = DEFAULT_VENV,
    log_dir: Path = DEFAULT_LOG_DIR,
    workdir: Path | None = None,
    path_env: str | None = None,
) -> dict[str, str]:
    """The template's values for this machine: absolute paths, checked to exist.

    `workdir` defaults to the config file's directory (the fleet resolves relative model paths
    against the config file anyway, so this only matters for relative paths you add yourself).
    `path_env` defaults to the venv's bin directory, Homebrew's, and the system's.
    """
    config = config.expanduser().resolve()
    if not config.is_file():
        raise InstallError(f"--config: {config} is not a file")
    venv = venv.expanduser().resolve()
    # Not resolved: the console script is a plain file, and its shebang names the venv's python.
    executable = venv / "bin" / "mlx-fleet"
    if not (executable.is_file() and os.access(executable, os.X_OK)):
        raise InstallError(
            f"--venv: {executable} is not an executable; create the venv and run "
            f"`{venv}/bin/pip install -e .` in the mlx-fleet checkout first"
        )
    log_dir = log_dir.expanduser().absolute()
    workdir = (workdir.expanduser().resolve() if workdir is not None else config.parent)
    if not workdir.is_dir():
        raise InstallError(f"--workdir: {workdir} is not a directory")
    if path_env is None:
        path_env = ":".join([str(venv / "bin"), *SYSTEM_PATH])
    return {
        "MLX_FLEET": str(executable),
        "CONFIG": str(config),
        "WORKDIR": str(workdir),
        "LOG_DIR": str(log_dir),
        "PATH": path_env,
    }


def check_plist(data: bytes) -> dict:
    """Parse a rendered plist and check the parts launchd needs; return it."""
    try:
        plist = plistlib.loads(data)
    except (ValueError, ExpatError) as e:  # InvalidFileException is a ValueError
        raise InstallError(f"the rendered plist does not parse: {e}") from None
    if not isinstance(plist, dict) or plist.get("Label") != LABEL:
        raise InstallError(f"the rendered plist has no Label {LABEL!r}")
    args = plist.get("ProgramArguments")
    if not (isinstance(args, list) and args and all(isinstance(a, str) and a for a in args)):
        raise InstallError("the rendered plist has no usable ProgramArguments")
    return plist


def commands(out: Path) -> list[tuple[str, str]]:
    """What to run next, as (purpose, shell command) pairs."""
    domain = "gui/$(id -u)"
    return [
        ("load and start", f"launchctl bootstrap {domain} {shlex.quote(str(out))}"),
        ("restart", f"launchctl kickstart -k {domain}/{LABEL}"),
        ("stop and unload", f"launchctl bootout {domain}/{LABEL}"),
        ("state", f"launchctl print {domain}/{LABEL}"),
    ]


def write_plist(text: str, out: Path) -> None:
    """Write atomically with mode 0644 (launchd ignores a group- or world-writable plist)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(0o644)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def load(out: Path) -> None:
    """Replace any loaded copy of the service with `out` and start it (macOS only)."""
    if sys.platform != "darwin":
        raise InstallError(f"--load runs launchctl, which exists only on macOS (this is {sys.platform})")
    domain = f"gui/{os.getuid()}"
    target = f"{domain}/{LABEL}"

    def launchctl(*args: str, check: bool = True, quiet: bool = False) -> subprocess.CompletedProcess[str]:
        if not quiet:
            print("+ launchctl " + " ".join(shlex.quote(a) for a in args), file=sys.stderr)
        result = subprocess.run(["launchctl", *args], capture_output=True, text=True)
        if check and result.returncode != 0:
            raise InstallError(f"launchctl {args[0]} failed ({result.returncode}): "
                               f"{(result.stderr or result.stdout).strip()}")
        return result

    if launchctl("print", target, check=False, quiet=True).returncode == 0:
        launchctl("bootout", target, check=False)
        deadline = time.monotonic() + _BOOTOUT_WAIT_SECONDS
        while launchctl("print", target, check=False, quiet=True).returncode == 0:
            if time.monotonic() > deadline:
                raise InstallError(f"{target} is still loaded {_BOOTOUT_WAIT_SECONDS:.0f} s after bootout")
            time.sleep(0.5)
    launchctl("bootstrap", domain, str(out))  # RunAtLoad starts it


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="install.py", description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", type=Path, required=True, help="the fleet.toml the service serves")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="the venv mlx-fleet is installed in")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the plist")
    parser.add_argument("--log-dir", type=Path, default=DEFAULT_LOG_DIR, help="for mlx-fleet.{out,err}.log")
    parser.add_argument("--workdir", type=Path, help="working directory (default: the config's directory)")
    parser.add_argument("--path", dest="path_env", help="PATH for the service (default: venv/bin + system)")
    parser.add_argument("--template", type=Path, default=TEMPLATE, help=argparse.SUPPRESS)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--print", action="store_true", help="print the plist to stdout; write nothing")
    mode.add_argument("--load", action="store_true", help="also (re)load it with launchctl (macOS only)")
    args = parser.parse_args(argv)

    try:
        if args.load and sys.platform != "darwin":
            raise InstallError(f"--load runs launchctl, which exists only on macOS (this is {sys.platform}); "
                               "nothing was written")
        values = build_values(args.config, args.venv, args.log_dir, args.workdir, args.path_env)
        text = render(args.template.read_text(encoding="utf-8"), values)
        check_plist(text.encode("utf-8"))
        if args.print:
            sys.stdout.write(text)
            return 0
        out = args.out.expanduser().absolute()
        Path(values["LOG_DIR"]).mkdir(parents=True, exist_ok=True)
        write_plist(text, out)
        check_plist(out.read_bytes())
    except (InstallError, OSError) as e:
        print(f"install.py: {e}", file=sys.stderr)
        return 2

    print(f"wrote {out}")
    print(f"  runs  {values['MLX_FLEET']} serve --config {values['CONFIG']}")
    print(f"  logs  {values['LOG_DIR']}/mlx-fleet.out.log, mlx-fleet.err.log")
    if args.load:
        try:
            load(out)
        except (InstallError, OSError) as e:
            print(f"install.py: {e}", file=sys.stderr)
            return 1
        print(f"loaded {LABEL}")
    width = max(len(purpose) for purpose, _ in commands(out))
    print()
    for purpose, command in commands(out):
        print(f"  {purpose:<{width}}  {command}")
    if not args.load:
        print("\n  launchd reads the plist only at bootstrap: after re-running install.py, bootout then bootstrap")
        print("  (or re-run it with --load, which does both).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
