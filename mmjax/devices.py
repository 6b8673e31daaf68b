"""Which devices a command runs on, set before jax starts its backend: `--device` (makemore's names for jax's
platforms), `--distributed` (several processes, one per host), and the CPU as one device per core."""

import argparse
import os

import jax
import jax.extend.backend

from mmjax import compile_cache
from mmjax.errors import UserError

# makemore's --device names, and the jax platform each one is
PLATFORMS = {"cpu": "cpu", "cuda": "cuda", "gpu": "cuda", "tpu": "tpu", "mps": "METAL"}


def device_flag(text):
    """--device: a name of PLATFORMS, or cuda:N (gpu:N) for the one GPU N, as makemore and PyTorch write it."""
    name, colon, index = text.partition(":")
    if name not in PLATFORMS or colon and not (PLATFORMS[name] == "cuda" and index.isdigit()):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}: choose cpu, cuda, cuda:N, gpu, mps or tpu")
    return text


def setup(device=None, distributed=False, cpu_device_per_core=False, whole_process=False):
    """Before anything touches the devices: `cpu_device_per_core` for what splits over devices without
    communicating (populations, sampling; never one model's training, whose batch would be split), then
    the platform of `device`, joined with the other processes if `distributed`, started and checked. A
    `whole_process` (a command, not a notebook's call) also gets the persistent compilation cache."""
    if whole_process:
        compile_cache.enable()
    if cpu_device_per_core:
        one_cpu_device_per_core()
    if device:
        name, _, index = device.partition(":")
        jax.config.update("jax_platforms", PLATFORMS[name])  # no GPU memory taken by a CPU run
        if index:
            jax.config.update("jax_cuda_visible_devices", index)
    if distributed:  # finds the others on TPU pods, SLURM, Open MPI, Kubernetes
        try:
            jax.distributed.initialize()
        except ValueError as e:
            raise UserError(f"--distributed found no cluster to join ({str(e).rstrip('.')}): run train.py once "
                            "per host on a TPU pod or under SLURM or Open MPI, or drop --distributed") from None
    if device:
        start_platform(device)


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
