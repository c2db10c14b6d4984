"""The one exception type users see: a message that names the problem and the fix."""


class PrunekitError(Exception):
    """Bad input or a failed precondition, phrased for the user.

    The CLI prints the message without a traceback and exits with status 2.
    """


def require_file(path, what: str) -> None:
    """PrunekitError unless ``path`` is a file: a folder is named as a folder (with its ``last.pt`` as the
    likely meaning when it holds one), anything else as not found. ``what``: ``checkpoint``, ``ratio file``, …"""
    from pathlib import Path

    path = Path(path)
    if path.is_file():
        return
    if path.is_dir():
        inside = path / "last.pt"
        hint = f", e.g. {inside}" if inside.is_file() else ""
        raise PrunekitError(f"{what} {path} is a folder, not a file; name a file inside it{hint}")
    raise PrunekitError(f"{what} not found: {path}")
