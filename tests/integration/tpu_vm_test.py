"""docs/tpu_vm.md's commands, word for word less the `gcloud ... ssh` wrapper, on a pod slice
made on this machine: four processes of two CPU devices each (JAX's distributed runtime on
127.0.0.1, the variables JAX reads from a TPU's metadata set in their environment), one
workdir in a bucket of the GCS emulator (the `gcs` fixture). A preemption notice to one host
and a dropped session on all of them each stop every host after the same epoch, saved; the
reruns reach bit for bit the parameters of an uninterrupted run on the same 8 devices; eval
and predict from one host read what all of them wrote."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import QUICK_COMPILE_XLA_FLAGS, ROOT, without_tensorflow_env
from PIL import Image

HOSTS, DEVICES_PER_HOST, EPOCHS = 4, 2, 5
# The run the page's command trains, made small through make's ARGS (its environment): large
# batches, since each step's all-reduce crosses four processes sharing this machine's cores
# (the test took 154 CPU seconds with batches of 256, 92 with these; 2-core Xeon).
ARGS = f"--config.num_epochs={EPOCHS} --config.num_hiddens=64 --config.batch_size=4096"


def _page_command(name: str) -> str:
    """The shell command of the block marked `<!-- tested: NAME -->` in docs/tpu_vm.md, less
    the `gcloud ... ssh --command='...'` around it."""
    page = (ROOT / "docs" / "tpu_vm.md").read_text()
    block = re.search(rf"<!-- tested: {name} -->\n```bash\n(.*?)\n```", page, re.S).group(1)
    wrapped = re.search(r"--command='(.*)'$", block)
    return wrapped.group(1) if wrapped else block


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Pod:
    """The page's pod command on HOSTS processes, each in a session of its own (as each host's
    ssh session), its output in a file."""

    def __init__(self, command: str, env: dict, folder):
        port = _free_port()
        self.folder, self.hosts = folder, []
        for i in range(HOSTS):
            host_env = {
                **env,
                "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
                "JAX_NUM_PROCESSES": str(HOSTS),
                "JAX_PROCESS_ID": str(i),
                # A TPU VM's programs are XLA:TPU's: the CPU's are compiled quick (a sixth
                # off the test's time).
                "XLA_FLAGS": f"{QUICK_COMPILE_XLA_FLAGS} "
                f"--xla_force_host_platform_device_count={DEVICES_PER_HOST}",
                "JAX_PLATFORMS": "cpu",
            }
            with open(folder / f"out{i}", "w") as out, open(folder / f"err{i}", "w") as err:
                self.hosts.append(
                    subprocess.Popen(
                        ["bash", "-c", command],
                        env=host_env,
                        stdout=out,
                        stderr=err,
                        start_new_session=True,
                    )
                )

    def wait_for(self, text: str, timeout: float = 240) -> None:
        """Until host 0 has printed `text`."""
        deadline = time.monotonic() + timeout
        while text not in (self.folder / "out0").read_text():
            assert all(h.poll() is None for h in self.hosts), self.stderr(0)
            assert time.monotonic() < deadline, f"no {text!r} within {timeout} s"
            time.sleep(0.05)

    def signal(self, number: int, hosts) -> None:
        for i in hosts:  # The whole session: bash, make and python, as a host's sshd sends.
            os.killpg(self.hosts[i].pid, number)

    def finish(self, timeout: float = 300) -> list[int]:
        """Each host's exit status, once every process of every session has ended (a make
        killed by the signal leaves its python to finish the epoch and save it)."""
        statuses = [h.wait(timeout=timeout) for h in self.hosts]
        deadline = time.monotonic() + timeout
        while any(_session_alive(h.pid) for h in self.hosts):
            assert time.monotonic() < deadline, "a host's process outlived its session"
            time.sleep(0.1)
        return statuses

    def stderr(self, i: int) -> str:
        return (self.folder / f"err{i}").read_text()

    def stop_lines(self) -> list[str]:
        return [
            [line for line in self.stderr(i).splitlines() if line.startswith("error: ")]
            for i in range(HOSTS)
        ]


def _session_alive(session: int) -> bool:
    try:
        os.killpg(session, 0)
    except ProcessLookupError:
        return False
    return True


_COMPARE = """
import sys, jax, numpy as np
from mlp_jax import checkpointing
a, b = (jax.tree.leaves(checkpointing.restore_workdir(w).state.params) for w in sys.argv[1:])
print(max(float(np.max(np.abs(x - y)) / (np.max(np.abs(y)) + 1e-12)) for x, y in zip(a, b)))
"""


def _stopped_after(pod: Pod, name: str) -> int:
    """The one epoch every host stopped after, each with one line naming `name`."""
    epochs = set()
    for lines in pod.stop_lines():
        assert len(lines) == 1 and f"stopped by {name} after epoch" in lines[0], lines
        assert "rerun the same command to resume" in lines[0]
        epochs.add(int(lines[0].split("after epoch ")[1].split("/")[0]))
    (epoch,) = epochs
    return epoch


@pytest.fixture
def home(tmp_path):
    """A host's home: the clone at ~/mlp_jax (this repository), a photo at ~/shirt.png."""
    (tmp_path / "mlp_jax").symlink_to(ROOT)
    picture = (np.arange(60 * 40) % 256).astype(np.uint8).reshape(60, 40)
    Image.fromarray(picture).save(tmp_path / "shirt.png")
    return tmp_path


def test_the_pages_pod_slice_stops_together_resumes_and_is_read_from_one_host(gcs, home):
    bucket = f"bucket/{home.name}"
    env = without_tensorflow_env({**gcs, "HOME": str(home), "ARGS": ARGS})
    for name in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS"):  # As a user's shell runs them, not
        env.pop(name, None)  # as a recipe of `make test-all` (which makes make chatty).
    command = _page_command("pod").replace("BUCKET", bucket)
    assert command.startswith("cd ~/mlp_jax && MLP_JAX_DISTRIBUTED=1 make train")

    # The same run, uninterrupted, on the same pod slice.
    reference = Pod(command.replace("runs/pod", "runs/reference"), env, home)
    assert reference.finish() == [0] * HOSTS, reference.stderr(0)

    # A preemption notice to host 1 alone: every host stops after the same epoch, saved.
    pod = Pod(command, env, home)
    pod.wait_for(f"epoch   1/{EPOCHS}")
    pod.signal(signal.SIGTERM, [1])
    assert all(pod.finish()), pod.stderr(0)  # make's status (2), or the signal's.
    first_stop = _stopped_after(pod, "SIGTERM")
    assert first_stop < EPOCHS

    # The page's command again resumes; every session dropped (SIGHUP to all) stops it again.
    pod = Pod(command, env, home)
    pod.wait_for(f"resumed from the checkpoint of epoch {first_stop}")
    pod.wait_for(f"epoch   {first_stop + 1}/{EPOCHS}")
    pod.signal(signal.SIGHUP, range(HOSTS))
    assert all(pod.finish()), pod.stderr(0)
    second_stop = _stopped_after(pod, "SIGHUP")
    assert first_stop < second_stop < EPOCHS

    # And again, to the end: bit for bit the parameters of the uninterrupted run.
    pod = Pod(command, env, home)
    assert pod.finish() == [0] * HOSTS, pod.stderr(0)
    assert f"resumed from the checkpoint of epoch {second_stop}" in (home / "out0").read_text()
    compared = subprocess.run(
        [
            sys.executable,
            "-c",
            _COMPARE,
            f"gs://{bucket}/runs/pod",
            f"gs://{bucket}/runs/reference",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert compared.returncode == 0, compared.stderr
    assert float(compared.stdout) == 0.0

    # Eval and predict from one host, as the page gives them (without the training's ARGS,
    # which `make eval` passes on).
    outputs = {}
    for name in ("eval", "predict"):
        one_host = subprocess.run(
            ["bash", "-c", _page_command(name).replace("BUCKET", bucket)],
            env={k: v for k, v in env.items() if k != "ARGS"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert one_host.returncode == 0, one_host.stderr
        outputs[name] = one_host.stdout.strip().splitlines()[-1]
    assert json.loads(outputs["eval"])["epoch"] == EPOCHS
    assert outputs["predict"].startswith(f"{home / 'shirt.png'}: ")
