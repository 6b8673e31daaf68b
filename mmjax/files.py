"""Writing a work dir's files: whole or not at all, and a failed write (a full disk) as one UserError."""

import json
import os
import pathlib

from mmjax.errors import UserError


def write_atomically(path, text):
    """The whole text or, if writing fails (a full disk), the file as it was; another process writing it at
    the same time writes its own temporary file."""
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path, obj):
    write_atomically(path, json.dumps(obj, indent=1, ensure_ascii=False))


def cache_dir():
    """mmjax's cache directory: $MMJAX_CACHE, else $XDG_CACHE_HOME/mmjax, else ~/.cache/mmjax."""
    if os.environ.get("MMJAX_CACHE"):
        return pathlib.Path(os.environ["MMJAX_CACHE"])
    return pathlib.Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "mmjax"


def disk_full(what, e, workdir_path):
    """A write that failed during training (a full disk, a quota): what is kept, and how to go on."""
    reason = getattr(e, "strerror", None) or (str(e).splitlines() or [type(e).__name__])[0][:100]
    return UserError(f"cannot write {what} ({reason}), so training stopped (the checkpoints and metrics "
                     f"before it are kept): free space on the disk, then train.py -o {workdir_path} --resume")
