"""The commands' persistent XLA compilation cache: a program compiled once (the same model, shapes and
options) is read back in later runs instead of compiled again. In mmjax's cache directory ($MMJAX_CACHE,
else $XDG_CACHE_HOME/mmjax, else ~/.cache/mmjax), under xla/; off with MMJAX_COMPILE_CACHE=0; a cache
set by the user (JAX_COMPILATION_CACHE_DIR, jax.config) is kept. A cached executable is the program XLA
compiled, so results are bit-identical with and without it. A cache that cannot be read or written (a
read-only home, a full disk, a damaged entry) costs a compilation and one line of warning, never the run."""

import os
import sys
import tempfile
import warnings

import jax

from mmjax.files import cache_dir

JAX_WARNINGS = ("Error reading persistent compilation cache entry", "Error writing persistent compilation cache entry")


def enable():
    """Turns the cache on for this process (the commands call it; the Python API leaves jax as it is)."""
    if os.environ.get("MMJAX_COMPILE_CACHE", "1") == "0" or jax.config.jax_compilation_cache_dir:
        return
    path = cache_dir() / "xla"
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as e:
        warn(f"no compilation cache in {path} ({e.strerror}): every run compiles its programs again; set "
             "MMJAX_CACHE to a writable directory, or MMJAX_COMPILE_CACHE=0")
        return
    jax.config.update("jax_compilation_cache_dir", str(path))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:  # else the user's
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)  # the steps, evaluations, sampler
    show = warnings.showwarning

    def one_line(message, category, filename, lineno, file=None, line=None):
        """jax's warning of a cache entry it could not read or write (it compiles instead), once, on one line."""
        text = str(message)
        if not text.startswith(JAX_WARNINGS):
            return show(message, category, filename, lineno, file, line)
        if not one_line.said:
            one_line.said = True
            warn(f"the compilation cache in {path} failed ({text.split(': ', 1)[-1].splitlines()[0][:120]}): "
                 "compiling instead; delete the directory if this goes on")

    one_line.said = False
    warnings.showwarning = one_line


def warn(message):
    print(f"warning: {message}", file=sys.stderr)
