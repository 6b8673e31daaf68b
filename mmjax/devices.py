"""Which devices a command runs on, set before jax starts its backend: `--device` (makemore's names for jax's
platforms), `--distributed` (several processes, one per host), and the CPU as one device per core."""

import argparse
import errno
import hashlib
import json
import os
import socket
import sys
import threading
import time

import jax
import jax.extend.backend
import numpy as np

from mmjax import compile_cache
from mmjax.errors import UserError

HEARTBEAT_TIMEOUT = 30  # seconds of silence after which jax's coordinator counts a process as dead
# makemore's --device names, and the jax platform each one is
PLATFORMS = {"cpu": "cpu", "cuda": "cuda", "gpu": "cuda", "tpu": "tpu", "mps": "METAL"}


def device_flag(text):
    """--device: a name of PLATFORMS, or cuda:N (gpu:N) for the one GPU N, as makemore and PyTorch write it."""
    name, colon, index = text.partition(":")
    if name not in PLATFORMS or colon and not (PLATFORMS[name] == "cuda" and index.isdigit()):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}: choose cpu, cuda, cuda:N, gpu, mps or tpu")
    return text


def setup(device=None, distributed=None, cpu_device_per_core=False, whole_process=False):
    """Before anything touches the devices: `cpu_device_per_core` for what splits over devices without
    communicating (populations, sampling; never one model's training, whose batch would be split), then
    the platform of `device`, joined with the other processes if `distributed` ((coordinator, number of
    processes, process id), each None where a cluster manager tells: `join`), started and checked. A `whole_process` (a command, not a notebook's call) also gets the persistent compilation cache."""
    if whole_process:
        compile_cache.enable()
    if cpu_device_per_core:
        one_cpu_device_per_core()
    if device:
        name, _, index = device.partition(":")
        jax.config.update("jax_platforms", PLATFORMS[name])  # no GPU memory taken by a CPU run
        if index:
            jax.config.update("jax_cuda_visible_devices", index)
    if distributed is not None:
        join(*distributed)
    if device:
        start_platform(device)


def join(coordinator=None, num_processes=None, process_id=None, timeout=60):
    """jax.distributed.initialize, its failures one-line UserErrors within `timeout` seconds. With a
    coordinator (HOST:PORT, or jax's JAX_COORDINATOR_ADDRESS), the number of processes and this one's id,
    as on machines without a cluster manager; without them jax finds the others (TPU pods, SLURM, Open MPI).
    On CPUs the processes' collectives go through gloo. A process that is not the coordinator first waits for
    the coordinator to listen: jax's own wait ends the process (abort) rather than raising."""
    coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if coordinator is None and num_processes is None and process_id is None:
        try:
            return jax.distributed.initialize()
        except ValueError as e:
            raise UserError(f"--distributed found no cluster to join ({str(e).rstrip('.')}): run train.py once "
                            "per host on a TPU pod or under SLURM or Open MPI, or give --coordinator HOST:PORT "
                            "--num-processes N --process-id I") from None
    if coordinator is None or num_processes is None or process_id is None:
        raise UserError("--distributed without a cluster manager takes --coordinator HOST:PORT, --num-processes N "
                        "and --process-id I on every process: give all three")
    host, _, port = coordinator.rpartition(":")
    if not (host and port.isdigit() and 0 < int(port) < 65536):
        raise UserError(f"--coordinator {coordinator!r} is not HOST:PORT: give process 0's address and a free port, "
                        "e.g. 10.0.0.1:12345")
    if not 0 <= process_id < num_processes:
        raise UserError(f"--process-id {process_id} is not one of 0..{num_processes - 1} (--num-processes "
                        f"{num_processes}): number the processes from 0")
    try:
        socket.getaddrinfo(host, int(port))
    except socket.gaierror as e:
        raise UserError(f"--coordinator {coordinator}: no such host ({e.strerror}): give process 0's address") from None
    if process_id == 0 and not bindable(int(port)):
        raise UserError(f"port {port} of --coordinator {coordinator} is in use on this host: pick another, the same "
                        "on every process")
    if process_id and not reachable(host.strip("[]"), int(port), timeout):
        raise UserError(f"no coordinator answered at {coordinator} within {timeout} s: start process 0 with "
                        "--process-id 0 and the same --coordinator, or fix the address")
    if jax.config.jax_platforms in (None, "", "cpu"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    fix = (f"give every process the same --coordinator and --num-processes, a free port, and ids 0..{num_processes - 1} "
           "once each")
    # jax ends a process that waits too long for the others with an abort: one line and exit 2 before it
    watchdog = threading.Timer(timeout - 1, lambda: (print(f"error: not all {num_processes} processes joined at "
                                                           f"{coordinator} within {timeout} s: {fix}", file=sys.stderr,
                                                           flush=True), os._exit(UserError.exit_status)))
    watchdog.daemon = True
    watchdog.start()
    try:
        jax.distributed.initialize(coordinator, num_processes, process_id, initialization_timeout=timeout,
                                   heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT)
    except Exception as e:  # the coordinator's port in use, a process id taken twice, ...
        raise UserError(f"--distributed could not join the others at {coordinator} ({reason(e)}): {fix}") from None
    finally:
        watchdog.cancel()


def bindable(port):
    """Whether the coordinator can listen on `port` on every interface (as jax's does, address reuse on)."""
    for family, address in ((socket.AF_INET6, "::"), (socket.AF_INET, "")):
        try:
            with socket.socket(family) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((address, port))
            return True
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return False
    return True


def reachable(host, port, timeout):
    """Whether a TCP connection to host:port opens within `timeout` seconds (tried every 0.2 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.2)
    return False


def lost_process(e):
    """Whether `e` is a collective that failed because another process of the run died (its connection
    reset, its heartbeats missed): jax raises these as runtime errors (gloo's as ValueError)."""
    signs = ("Gloo", "gloo", "Connection reset", "Connection closed", "UNAVAILABLE", "heartbeat", "DEADLINE_EXCEEDED")
    return (jax.process_count() > 1 and isinstance(e, (jax.errors.JaxRuntimeError, ValueError))
            and not isinstance(e, UserError) and any(sign in str(e) for sign in signs))


def reason(e):
    """The first line of a runtime error, shortened."""
    return (str(e).splitlines() or [type(e).__name__])[0][:120]


def agree(what, value):
    """Refuses, on every process, a run whose processes were given different `value`s (a config, the words):
    they would train different models while exchanging gradients. Compared by digest, all processes at once."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    digest = np.frombuffer(hashlib.sha256(json.dumps(value, sort_keys=True).encode()).digest()[:8], np.int64)[0]
    digests = np.asarray(multihost_utils.process_allgather(digest)).ravel()
    if (digests != digests[0]).any():
        other = int(np.flatnonzero(digests != digests[0])[0])
        raise UserError(f"the processes disagree on {what}: process {other}'s differs from process 0's; give every "
                        "process the same flags and input file")


def start_platform(device):
    """Starts the platform chosen; one jax does not see is a UserError naming those it sees."""
    name = device.partition(":")[0]
    try:
        jax.devices()
    except Exception:  # RuntimeError, or an AssertionError from jax when no GPU is visible
        jax.config.update("jax_platforms", "")
        jax.extend.backend.clear_backends()
        seen = sorted(jax.extend.backend.backends())
        raise UserError(f"--device {device}: jax sees no {PLATFORMS[name]} device here, only {', '.join(seen)}: "
                        f"pass --device {seen[0]}, or install jax for {name} (docs/devices.md)"
                        ) from None


def one_cpu_device_per_core():
    """The CPU as a device per core: XLA:CPU runs a small model's operations on about one core, and members
    or sampled rows split over devices keep them all busy. Not when the user set the CPU's device count, and
    not once jax has started."""
    if jax.config.jax_num_cpu_devices == -1 and "device_count" not in os.environ.get("XLA_FLAGS", ""):
        try:
            jax.config.update("jax_num_cpu_devices", len(os.sched_getaffinity(0)))
        except RuntimeError:  # the backend has started
            pass
