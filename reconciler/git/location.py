"""Where a fleet repository lives: a URL, an scp-like ``[user@]host:path``, or a local path.

One rule for every command, git's own: a colon before the first slash makes an scp-like address.
Standard library only: the agent's configuration loader uses it before pygit2 is imported.
"""

from __future__ import annotations

from pathlib import Path


def is_url(location: str) -> bool:
    """``scheme://...`` (file:// included) or scp-like ``[user@]host:path``."""
    if "://" in location:
        return True
    head = location.split("/", 1)[0]
    return ":" in head


def local_path(location: str) -> Path | None:
    """The directory of a repository on this machine (a path or a file:// URL); None for a remote one."""
    if location.startswith("file://"):
        return Path(location[len("file://"):])
    return None if is_url(location) else Path(location)


def is_working_tree(path: Path) -> bool:
    """A non-bare repository (a work tree, or the ``.git`` directory of one): libgit2 cannot push into it, so
    the agent could fetch from it but never deliver its status."""
    if (path / ".git").exists():
        return True
    try:
        config = (path / "config").read_text(errors="replace") if (path / "HEAD").is_file() else ""
    except OSError:
        return False
    return any(line.strip().replace(" ", "") == "bare=false" for line in config.splitlines())
