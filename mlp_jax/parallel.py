"""Where the compiled epochs run: one device (jit), or data-parallel through `pmap` or
`jax.shard_map`; and JAX's multi-host start-up.

The per-device function is `mlp_jax.steps.train_epochs` (K epochs, each with its validation);
the modes differ only in how it is wrapped and how the state and data are laid out on the
devices. The data are replicated on every device (Fashion-MNIST is 55 MB as uint8) and each
device gathers its share of every global batch, so K epochs, data-parallel or not, are one
program.
"""

import collections
import functools
import os
import re
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mlp_jax import config as config_lib
from mlp_jax import steps
from mlp_jax.config import EpochOptions
from mlp_jax.errors import UserError, environment_number, first_line

AXIS = "batch"


class Runner(NamedTuple):
    """The training program for one parallel mode, and the layout it expects.

    Attributes:
      mode: "none", "pmap" or "shard_map"; "population" for a vmapped population's
        (`mlp_jax.sweep.population_runner`).
      num_devices: devices the global batch is split over.
      train_epochs: K -> the program of K epochs (K = 1 included), each with its validation
        (see `mlp_jax.steps.train_epochs`): (state, train data, validation data) -> (state,
        (TrainMetrics, EvalMetrics) stacked K deep), the state donated; made once per K.
      replicate: puts a single-copy tree (state or data) into the layout of this mode.
      unreplicate: one copy of a tree in this mode's layout (what checkpoints hold).
      copy_sharding: where one copy lives; checkpoints are restored there.
    """

    mode: str
    num_devices: int
    train_epochs: Callable[[int], Callable]
    replicate: Callable[[Any], Any]
    unreplicate: Callable[[Any], Any]
    copy_sharding: jax.sharding.Sharding


def is_multiprocess_launch(env=os.environ) -> bool:
    """Whether this process was started as one of several that train together.

    True when MLP_JAX_DISTRIBUTED=1 (e.g. on every host of a Cloud TPU pod slice, where JAX
    reads the topology from the TPU metadata), when JAX_COORDINATOR_ADDRESS is set, or when
    a multi-host TPU (TPU_WORKER_HOSTNAMES), SLURM or Open MPI launch names several processes.
    """
    distributed = env.get("MLP_JAX_DISTRIBUTED", "").strip()
    if distributed not in ("", "0", "1"):  # "true" was taken for one process, without a word.
        raise UserError(
            f"MLP_JAX_DISTRIBUTED={distributed!r} is neither 1 (one of several processes) nor "
            "0; set it to one of them, or unset it"
        )
    if distributed == "1" or env.get("JAX_COORDINATOR_ADDRESS"):
        return True
    if "," in env.get("TPU_WORKER_HOSTNAMES", ""):
        return True
    return any(
        environment_number(name, 1, whole=True, env=env) > 1
        for name in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")
    )


def maybe_initialize_distributed() -> None:
    """Starts JAX's distributed runtime (`jax.distributed.initialize`) for a multi-process
    launch; a single process does nothing. Settings missing from the environment
    (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID) are left to JAX's own
    cluster detection (TPU metadata, SLURM, Open MPI)."""
    if not is_multiprocess_launch() or jax.distributed.is_initialized():
        return
    env = os.environ
    num_processes, process_id = (
        environment_number("JAX_NUM_PROCESSES", whole=True),
        environment_number("JAX_PROCESS_ID", whole=True),
    )
    if num_processes is not None and process_id is not None and process_id >= num_processes:
        raise UserError(
            f"JAX_PROCESS_ID={process_id} is not one of the {num_processes} processes "
            f"(JAX_NUM_PROCESSES); give each process its own id in 0..{num_processes - 1}"
        )
    address = env.get("JAX_COORDINATOR_ADDRESS")
    if address and not re.fullmatch(r".+:\d+", address):
        raise UserError(
            f"JAX_COORDINATOR_ADDRESS={address!r} is not HOST:PORT; give process 0's address "
            "and a free port, e.g. 10.0.0.2:8476"
        )
    try:
        _in_a_thread(
            jax.distributed.initialize,
            coordinator_address=address,
            num_processes=num_processes,
            process_id=process_id,
        )
    except (ValueError, RuntimeError) as e:  # A setting JAX refuses, or no coordinator.
        given = [f"{k}={env[k]!r}" for k in _DISTRIBUTED_SETTINGS if k in env]
        raise UserError(
            f"JAX's distributed runtime did not start ({first_line(e, 300)}); check "
            f"{', '.join(given) or 'the launch'}, and that every process was started"
        ) from None


def _in_a_thread(function, **kwargs) -> None:
    """Calls `function` in a thread of its own and waits for it in this one, which a stop
    signal can then end: JAX waits for every process of the run (up to its time-out, five
    minutes) inside one C++ call, where no signal handler runs."""
    raised = []

    def call():
        try:
            function(**kwargs)
        except BaseException as e:  # noqa: BLE001  (raised again in the caller's thread)
            raised.append(e)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.1)
    if raised:
        raise raised[0]


_DISTRIBUTED_SETTINGS = (
    "MLP_JAX_DISTRIBUTED",
    "JAX_COORDINATOR_ADDRESS",
    "JAX_NUM_PROCESSES",
    "JAX_PROCESS_ID",
)


# The environment's settings that choose and shape JAX's devices: what a user sets, and can
# unset, when the devices do not start.
_DEVICE_SETTINGS = (
    "JAX_PLATFORMS",
    "JAX_PLATFORM_NAME",
    "XLA_FLAGS",
    "CUDA_VISIBLE_DEVICES",
    "JAX_NUM_CPU_DEVICES",
)


def make_mesh(devices, axis_name: str) -> Mesh:
    """A one-axis mesh over `devices`: `jax.make_mesh` over every device (in the order it
    finds best for the interconnect), a plain Mesh over a subset. Its axis is Auto, not the
    Explicit that make_mesh now defaults to: the programs place their data by shardings
    given at their boundaries and leave the rest to XLA, where explicit axes would type
    every array inside with its sharding."""
    devices = list(devices)
    if len(devices) < jax.device_count():  # A subset, in its order: make_mesh may refuse one.
        return Mesh(np.asarray(devices), (axis_name,), axis_types=(AxisType.Auto,))
    return jax.make_mesh(
        (len(devices),), (axis_name,), axis_types=(AxisType.Auto,), devices=devices
    )


def start_runtime() -> None:
    """Starts the distributed runtime (for a multi-process launch), then the devices
    (`start_devices`), before anything else uses them."""
    maybe_initialize_distributed()
    start_devices()


def check_jax_settings() -> None:
    """Refuses, in one line, JAX settings under which this library's training programs
    cannot run, where a Python caller enters it (a run, `loop.fit`, a population), before a
    model meets them (the model's check blamed the model): `jax.disable_jit()` (the epochs
    are compiled ahead of time; a restore, eval, predict and export run under it) and
    devices `start_devices` cannot start.

    Raises:
      UserError: naming the setting and the fix.
    """
    if jax.config.jax_disable_jit:
        raise UserError(
            "jax.disable_jit() is on: mlp_jax compiles its programs ahead of time, and JAX "
            "cannot run those op by op; call it outside jax.disable_jit() (to step through a "
            "model, call its apply yourself)"
        )
    start_devices()


def start_devices() -> None:
    """Starts JAX's devices, so that devices the environment's settings cannot give (a
    JAX_PLATFORMS naming a platform this machine lacks, a device count XLA refuses) are one
    line naming the settings, before a command's work meets them (a study's blamed its
    model). With none of them set, or another failure (a driver's), the error is JAX's own,
    and shown whole. (The exercises' and the search's commands start them through
    `errors.run_command`.)"""
    try:
        jax.devices()
    except AssertionError:
        # JAX asserts where JAX_PLATFORMS names only platforms without a plugin here
        # ("cuda" on a machine without jax[cuda12]).
        platforms = os.environ.get("JAX_PLATFORMS")
        if not platforms:
            raise
        raise UserError(
            f"JAX cannot start the devices: JAX_PLATFORMS={platforms!r} names no platform "
            "this installation has (is its JAX wheel installed? make's JAX=...); unset it or "
            "name one that is"
        ) from None
    except RuntimeError as e:
        settings = [f"{k}={os.environ[k]!r}" for k in _DEVICE_SETTINGS if os.environ.get(k)]
        # JAX's wordings for a platform it cannot start, and for one it does not know.
        cannot = "Unable to initialize backend|Backend '.*' failed to initialize|Unknown backend"
        if not settings or not re.search(cannot, str(e)):
            raise
        raise UserError(
            f"JAX cannot start the devices ({first_line(e, 300)}); check or unset "
            f"{', '.join(settings)}"
        ) from None
    _refuse_unequal_device_counts(jax.devices())


def _refuse_unequal_device_counts(devices) -> None:
    """Refuses, on every process of a run, hosts that hold different numbers of devices:
    the collectives here (each process's share of a batch, `max_over_processes`) assume
    equal ones, and the first ended every process in a traceback. Every process knows every
    device, so each says so before any collective.

    Raises:
      UserError: naming each process's count.
    """
    counts = collections.Counter(device.process_index for device in devices)
    if len(set(counts.values())) > 1:
        each = ", ".join(f"process {index}: {count}" for index, count in sorted(counts.items()))
        raise UserError(
            f"the processes of this run hold different numbers of devices ({each}); give "
            "every host the same devices (on CPUs, the same "
            "XLA_FLAGS=--xla_force_host_platform_device_count=N)"
        )


def device_memory_bytes(device) -> int:
    """What one device can hold: its allocator's limit, or the host's memory for a CPU."""
    stats = device.memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"])
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def nbytes(tree) -> int:
    """The bytes of a tree's arrays (or of their shapes and dtypes)."""
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def check_state_fits(abstract_state, config) -> None:
    """Refuses, before anything is allocated, a train state that with its gradients cannot
    fit on one device (every device holds a full copy), naming the config keys that size it.

    Raises:
      UserError: with the bytes needed and the bytes there are.
    """
    state_bytes, gradient_bytes = nbytes(abstract_state), nbytes(abstract_state.params)
    device = jax.local_devices()[0]
    available = device_memory_bytes(device)
    if state_bytes + gradient_bytes > available:
        sizes = " or ".join(
            f"config.{k}={v}"
            for k, v in config.items()
            if config_lib.declared(k).sizes == config_lib.PARAMETERS
        )
        raise UserError(
            f"out of memory: the train state needs {state_bytes / 1e9:.1f} GB (parameters and "
            f"optimiser state) and its gradients {gradient_bytes / 1e9:.1f} GB, more than the "
            f"{available / 1e9:.1f} GB of one {device.platform} device; lower {sizes}"
        )


def max_over_processes(value: int) -> int:
    """The largest of every process's `value`, known to all of them: how processes agree
    between epochs (e.g. to stop on a preemption notice that reached only some hosts)."""
    if jax.process_count() == 1:
        return value
    gathered = multihost_utils.process_allgather(np.int32(value))
    return int(np.max(gathered))


def resolve_mode(mode: str, num_devices: int) -> str:
    """ "auto" becomes shard_map on several devices and none on one."""
    if mode == "auto":
        return "shard_map" if num_devices > 1 else "none"
    return mode


def check_batch_divides(batch_size: int, num_devices: int) -> None:
    """Fails with the device counts that work when the global batch does not split evenly."""
    if batch_size % num_devices:
        working = [n for n in range(1, num_devices + 1) if batch_size % n == 0]
        raise UserError(
            f"config.batch_size={batch_size} does not split over {num_devices} devices; "
            f"use a batch size divisible by {num_devices}, or run on {working} devices "
            "(on CPU: XLA_FLAGS=--xla_force_host_platform_device_count=N)"
        )


def place(tree, sharding: jax.sharding.Sharding):
    """Global arrays laid out by `sharding`, built from each process's full host copy (safe
    with several processes: each one fills only the shards its devices hold)."""

    def put(x):
        if isinstance(x, jax.Array) and x.sharding == sharding:
            return x
        if jax.process_count() == 1:  # No host round trip needed.
            return jax.device_put(x, sharding)
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)


def to_host(tree):
    """Numpy copies of (possibly sharded) global arrays, whole on every process."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)


def replicate_over_mesh(tree, mesh: Mesh):
    """Global arrays replicated on every device of `mesh` (safe with several processes)."""
    return place(tree, NamedSharding(mesh, P()))


def select_devices(num_devices: int) -> list:
    """The first `num_devices` devices (all of them for 0), in pmap's order."""
    devices = jax.devices()
    if num_devices > len(devices):
        raise UserError(f"config.num_devices={num_devices}, but only {len(devices)} devices exist")
    if num_devices and jax.process_count() > 1 and num_devices != len(devices):
        raise UserError("config.num_devices must be 0 (all devices) when running on several hosts")
    return devices[:num_devices] if num_devices else devices


@functools.lru_cache(maxsize=16)
def make_runner(
    mode: str, *, options: EpochOptions, eval_batch_size: int, num_devices: int = 0
) -> Runner:
    """Wraps the per-device program of K epochs for `mode`.

    Equal arguments get the very same runner (of the last 16), and so its jitted programs
    and their compilations: with the same model and optimiser (see
    `mlp_jax.optim.make_optimizer`), a second run of one config in a process compiles
    nothing.

    Args:
      mode: a config.parallel value ("auto", "none", "pmap", "shard_map").
      options: the epoch's options; their batch_size is the global training batch, their
        compute_dtype serves evaluation too.
      eval_batch_size: the global evaluation chunk (rounded up to a multiple of the devices).
      num_devices: how many devices to use; 0 uses all.
    """
    batch_size = options.batch_size
    devices = select_devices(num_devices)
    num_devices = len(devices)
    mode = resolve_mode(mode, num_devices)
    if mode == "none":
        num_devices = 1
    check_batch_divides(batch_size, num_devices)
    eval_batch_size = -(-eval_batch_size // num_devices) * num_devices
    axis_name = None if mode == "none" else AXIS

    def programs(wrap: Callable[[Callable], Callable]) -> Callable[[int], Callable]:
        """K -> `steps.train_epochs` of K epochs, wrapped by `wrap` (this mode's)."""
        return functools.cache(
            lambda num_epochs: wrap(
                functools.partial(
                    steps.train_epochs,
                    num_epochs=num_epochs,
                    options=options,
                    eval_batch_size=eval_batch_size,
                    axis_name=axis_name,
                )
            )
        )

    if mode == "none":
        device = jax.local_devices()[0]
        return Runner(
            mode,
            1,
            programs(lambda fn: jax.jit(fn, donate_argnums=0)),
            lambda tree: jax.device_put(tree, device),
            lambda tree: tree,
            jax.sharding.SingleDeviceSharding(device),
        )
    mesh = make_mesh(devices, AXIS)
    mesh_devices = list(mesh.devices.flat)
    if mode == "pmap":
        # pmap takes and returns global arrays whose leading axis runs over the devices, so
        # one layout serves one process and several (where per-process arrays do not meet
        # the program compiled ahead of time). One copy is taken out by a compiled slice.
        per_device = NamedSharding(mesh, P(AXIS))
        everywhere = NamedSharding(mesh, P())
        stack = jax.jit(
            lambda tree: jax.tree.map(lambda x: jnp.broadcast_to(x, (num_devices, *x.shape)), tree),
            out_shardings=per_device,
        )
        first_copy = jax.jit(
            lambda tree: jax.tree.map(lambda x: x[0], tree), out_shardings=everywhere
        )
        return Runner(
            mode,
            num_devices,
            # In the mesh's order, which jax.make_mesh may choose, so that the state laid out
            # over the mesh is where pmap expects it.
            programs(
                lambda fn: jax.pmap(fn, axis_name=AXIS, donate_argnums=0, devices=mesh_devices)
            ),
            lambda tree: stack(replicate_over_mesh(tree, mesh)),
            first_copy,
            everywhere,
        )
    if mode == "shard_map":

        def wrap(fn):
            # check_vma=False gives pmap's semantics: gradients of the replicated parameters
            # stay per-device and the step sums them explicitly, so one per-device function
            # serves both modes. (With vma checking, autodiff would insert that sum itself.)
            return jax.shard_map(fn, mesh=mesh, in_specs=P(), out_specs=P(), check_vma=False)

        return Runner(
            mode,
            num_devices,
            programs(lambda fn: jax.jit(wrap(fn), donate_argnums=0)),
            functools.partial(replicate_over_mesh, mesh=mesh),
            lambda tree: tree,
            NamedSharding(mesh, P()),
        )
    raise UserError(f"config.parallel={mode!r} is unknown; choose auto, none, pmap or shard_map")
