r"""The chapter's training run (784-256-10, SGD 0.1, batch 256, 10 epochs, test evaluation
after every epoch) in mlp_jax and in its peers, each in its own process on this machine.

  python -m benchmarks.train_speed [--epochs=10] [--peers=mlp_jax,flax_loop,torch_d2l,...]

Prints a Markdown table: steady-state seconds for the epochs (compilation or warm-up
excluded), warm-up seconds, examples/s, achieved GFLOP/s and its fraction of the ceiling
measured in the same run (`benchmarks.ceiling`, for the peer's dtype), whole-process seconds,
peak resident memory, final test accuracy, and each peer's time as a multiple of mlp_jax's.
A peer whose library is missing is reported as skipped.

Peers: flax_loop (the flax examples' Python loop over host batches with a jit-compiled step);
torch_d2l (d2l's Trainer loop: per-example dataset, DataLoader, 4 workers); torch_fast and
torch_compiled (what a speed-minded PyTorch user writes: data resident as tensors, an
on-device permutation, no DataLoader; eager, and with torch.compile); keras_jax (Keras 3 on
the JAX backend, model.fit with validation data). The PyTorch peers run on the GPU where
PyTorch sees one, as JAX's do. Mixed precision: mlp_jax_bf16 (config.compute_dtype
"bfloat16") and torch_fast_bf16 (the speed-minded loop under torch.autocast to bfloat16).
"""

import functools
import json
import os
import time

import numpy as np
from absl import flags

from benchmarks import ceiling, launch
from mlp_jax import errors, progress

FLAGS = flags.FLAGS

PEERS = (
    "mlp_jax",
    "flax_loop",
    "torch_d2l",
    "torch_fast",
    "torch_compiled",
    "keras_jax",
    "mlp_jax_bf16",
    "torch_fast_bf16",
)
BATCH, LR, HIDDEN = 256, 0.1, 256


def _load():
    from mlp_jax import data

    return data.load_fashion_mnist()


def _torch_device():
    """The GPU where PyTorch sees one, as a d2l user's `d2l.try_gpu()` picks it; else the CPU."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run_mlp_jax(epochs: int, compute_dtype: str = "float32") -> dict:
    """This project (`mlp_jax.loop.fit`, the loop of `make train`): device-resident data, one
    compiled program per epoch, exact evaluation, both metrics fetched every epoch."""
    from mlp_jax import data, loop
    from mlp_jax.config import load_experiment

    train, test = _load()
    config = load_experiment("experiments/mlp_concise.py")
    config.num_epochs, config.compute_dtype, config.parallel = epochs, compute_dtype, "none"
    assert (config.num_hiddens, config.lr, config.batch_size) == (HIDDEN, LR, BATCH)
    result = loop.fit(config, data.Dataset(train, test, test))
    phases = result.phase_seconds
    return {
        "warmup": phases["compile"],
        "seconds": phases["loop"],  # The whole epoch loop, as the peers' loops are timed.
        "test_acc": result.history[-1]["val_acc"],
    }


def run_mlp_jax_bf16(epochs: int) -> dict:
    """This project in mixed precision: bfloat16 products, float32 parameters and loss."""
    return run_mlp_jax(epochs, "bfloat16")


def run_flax_loop(epochs: int) -> dict:
    """The flax examples' style: a Python loop over host batches, a jit-compiled step."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax.training import train_state

    from mlp_jax.config import load_module

    train, test = _load()
    model = load_module("experiments/mlp_concise.py").MLP(num_hiddens=HIDDEN)
    params = model.init(jax.random.key(0), jnp.zeros((1, 784)))["params"]
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=optax.sgd(LR))

    @jax.jit
    def train_step(state, images, labels):
        def loss_fn(params):
            logits = state.apply_fn({"params": params}, images)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        return state.apply_gradients(grads=jax.grad(loss_fn)(state.params))

    @jax.jit
    def eval_step(params, images, labels):
        return jnp.sum(jnp.argmax(model.apply({"params": params}, images), -1) == labels)

    rng = np.random.default_rng(0)

    def epoch(state):
        order = rng.permutation(len(train.labels))
        for i in range(0, len(order), BATCH):
            idx = order[i : i + BATCH]
            state = train_step(state, train.images[idx] / np.float32(255), train.labels[idx])
        correct = 0
        for i in range(0, len(test.labels), BATCH):
            images = test.images[i : i + BATCH] / np.float32(255)
            correct += int(eval_step(state.params, images, test.labels[i : i + BATCH]))
        return state, correct / len(test.labels)

    t0 = time.perf_counter()
    state, _ = epoch(state)  # Compiles the full and the last, partial batch shapes.
    warmup = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(epochs):
        state, acc = epoch(state)
    return {"warmup": warmup, "seconds": time.perf_counter() - t0, "test_acc": acc}


def run_torch_d2l(epochs: int) -> dict:
    """d2l's PyTorch Trainer loop, faithfully: a map-style dataset that turns each uint8 image
    into a float tensor in [0, 1] as torchvision's ToTensor does, a DataLoader (shuffle, batch
    256, d2l's 4 workers), SGD 0.1, and evaluation over the test loader after every epoch.
    "curve" holds, per epoch, the training seconds so far (evaluation excluded) and the test
    accuracy, for the speedrun study's time to a target (experiments/studies/speedrun)."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

    torch.manual_seed(0)
    train, test = _load()

    class FashionMNIST(Dataset):
        def __init__(self, split):
            self.images, self.labels = split.images.reshape(-1, 28, 28), split.labels

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            image = torch.from_numpy(self.images[i]).float().div(255).unsqueeze(0)
            return image, int(self.labels[i])

    def loader(split, shuffle):
        return DataLoader(FashionMNIST(split), BATCH, shuffle=shuffle, num_workers=4)

    train_loader, test_loader = loader(train, True), loader(test, False)
    device = _torch_device()  # d2l's Trainer moves the model there and each batch as it comes.
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 10))
    model = model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()

    def fit_epoch():
        model.train()
        for x, y in train_loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            optimizer.step()

    def test_accuracy():
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in test_loader:
                x, y = x.to(device), y.to(device)
                correct += int((model(x).argmax(1) == y).sum())
        return correct / len(test.labels)

    train_seconds, curve = 0.0, []
    t0 = time.perf_counter()
    for _ in range(epochs):
        t1 = time.perf_counter()
        fit_epoch()
        train_seconds += time.perf_counter() - t1
        curve.append((train_seconds, test_accuracy()))
    seconds = time.perf_counter() - t0
    return {"warmup": 0.0, "seconds": seconds, "test_acc": curve[-1][1], "curve": curve}


def torch_data(device=None):
    """Fashion-MNIST resident on `device` (default: the GPU where PyTorch sees one) as float
    images in [0, 1] and int64 labels: (x_train, y_train, x_test, y_test)."""
    import torch

    device = device or _torch_device()
    return tuple(
        torch.from_numpy(array).to(device)
        for split in _load()
        for array in (split.images.astype(np.float32) / 255, split.labels.astype(np.int64))
    )


def lecun_normal_(linear) -> None:
    """Gives a torch Linear layer Flax's nn.Dense initialisation: LeCun-normal weights (a
    normal of variance 1 / fan_in truncated at 2 standard deviations, rescaled to keep that
    variance) and zero biases."""
    from torch import nn

    std = (1 / linear.in_features) ** 0.5 / 0.87962566103423978
    nn.init.trunc_normal_(linear.weight, std=std, a=-2 * std, b=2 * std)
    nn.init.zeros_(linear.bias)


def _torch_fast(epochs: int, compiled: bool, autocast_dtype=None) -> dict:
    import torch
    from torch import nn

    torch.manual_seed(0)
    device = _torch_device()  # Everything resident there, as in mlp_jax.
    x_train, y_train, x_test, y_test = torch_data(device)
    model = nn.Sequential(nn.Linear(784, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 10)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()

    # Under autocast the linear layers take bfloat16 operands; the loss stays float32.
    precision = functools.partial(
        torch.autocast, device.type, autocast_dtype, enabled=autocast_dtype is not None
    )

    def step(x, y):
        optimizer.zero_grad(set_to_none=True)
        with precision():
            loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()

    def predict(x):
        with torch.no_grad(), precision():
            return model(x).argmax(1)

    if compiled:
        step, predict = torch.compile(step), torch.compile(predict)

    def epoch():
        order = torch.randperm(len(y_train), device=device)
        for i in range(0, len(order), BATCH):
            idx = order[i : i + BATCH]
            step(x_train[idx], y_train[idx])
        return float((predict(x_test) == y_test).float().mean())

    t0 = time.perf_counter()
    epoch()  # Warm-up; torch.compile compiles here (both batch shapes).
    warmup = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(epochs):
        acc = epoch()
    return {"warmup": warmup, "seconds": time.perf_counter() - t0, "test_acc": acc}


def run_torch_fast(epochs: int) -> dict:
    """Speed-minded PyTorch, eager: resident tensors, torch.randperm, no DataLoader."""
    return _torch_fast(epochs, compiled=False)


def run_torch_compiled(epochs: int) -> dict:
    """Speed-minded PyTorch with the step and the prediction under torch.compile."""
    return _torch_fast(epochs, compiled=True)


def run_torch_fast_bf16(epochs: int) -> dict:
    """Speed-minded PyTorch, eager, under torch.autocast to bfloat16 (mixed precision)."""
    import torch

    return _torch_fast(epochs, compiled=False, autocast_dtype=torch.bfloat16)


def run_keras_jax(epochs: int) -> dict:
    """Keras 3 on the JAX backend: model.fit with SGD 0.1, batch 256, validation data."""
    os.environ["KERAS_BACKEND"] = "jax"
    import keras

    keras.utils.set_random_seed(0)
    train, test = _load()
    x_train, x_test = train.images.astype(np.float32) / 255, test.images.astype(np.float32) / 255
    model = keras.Sequential(
        [keras.Input((784,)), keras.layers.Dense(HIDDEN, "relu"), keras.layers.Dense(10)]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(LR),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    fit = {"batch_size": BATCH, "validation_data": (x_test, test.labels), "verbose": 0}
    t0 = time.perf_counter()
    model.fit(x_train, train.labels, epochs=1, **fit)  # Warm-up: traces and compiles.
    warmup = time.perf_counter() - t0
    t0 = time.perf_counter()
    history = model.fit(x_train, train.labels, epochs=epochs, **fit)
    seconds = time.perf_counter() - t0
    return {"warmup": warmup, "seconds": seconds, "test_acc": history.history["val_accuracy"][-1]}


def run_peer_process(
    peer: str, epochs: int, env: dict | None = None, module: str = "benchmarks.train_speed"
) -> dict:
    """Runs one peer (`run_PEER` of `module`) in a child process: its JSON result,
    whole-process seconds, peak RSS."""
    result = launch.run(
        f"--peer={peer}", f"--epochs={epochs}", module=module, env={**os.environ, **(env or {})}
    )
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["failed"])[-1]
        return {"peer": peer, "skipped": last[:150]}
    return {
        "peer": peer,
        "whole_process": result.seconds,
        **json.loads(result.stdout.splitlines()[-1]),
    }


def achieved_flops(seconds: float, epochs: int) -> float:
    """FLOP/s of the chapter's training with evaluation, taking `seconds` for `epochs`."""
    per_epoch = 60_000 * ceiling.train_flops_per_example(
        HIDDEN
    ) + 10_000 * ceiling.eval_flops_per_example(HIDDEN)
    return per_epoch * epochs / seconds


def peer_dtype(peer: str) -> str:
    """The dtype of a peer's matrix products."""
    return "bfloat16" if peer.endswith("_bf16") else "float32"


def table(rows: list[dict], epochs: int, ceiling_gflops: dict[str, float] | None = None) -> str:
    """The results as Markdown, each time also as a multiple of mlp_jax's, and each achieved
    rate as a fraction of `ceiling_gflops` (GFLOP/s per dtype) where given."""
    base = next((r for r in rows if r["peer"] == "mlp_jax" and "seconds" in r), None)
    lines = [
        f"| peer | dtype | {epochs} epochs (s) | warm-up (s) | examples/s | GFLOP/s "
        "| of ceiling | whole process (s) | peak RSS (MB) | test acc | time vs mlp_jax |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        dtype = peer_dtype(r["peer"])
        if "skipped" in r:
            lines.append(f"| {r['peer']} | {dtype} | skipped: {r['skipped']} | | | | | | | | |")
            continue
        ratio = f"{r['seconds'] / base['seconds']:.2f}x" if base else "n/a"
        gflops = achieved_flops(r["seconds"], epochs) / 1e9
        fraction = f"{gflops / ceiling_gflops[dtype]:.0%}" if ceiling_gflops else "n/a"
        lines.append(
            f"| {r['peer']} | {dtype} | {r['seconds']:.2f} | {r['warmup']:.2f} | "
            f"{60_000 * epochs / r['seconds']:,.0f} | {gflops:.0f} | {fraction} "
            f"| {r['whole_process']:.1f} | {r['peak_rss_mb']:.0f} | {r['test_acc']:.4f} | {ratio} |"
        )
    return "\n".join(lines)


def _define_flags() -> None:
    """Defines the command's flags (only when it runs: absl allows a flag name once)."""
    flags.DEFINE_integer("epochs", 10, "Epochs per peer.", lower_bound=1)
    flags.DEFINE_list("peers", list(PEERS), "The peers, each in its own process.")
    flags.register_validator(
        "peers",
        lambda peers: bool(peers) and set(peers) <= set(PEERS),
        f"give one or more of {', '.join(PEERS)}",
    )
    flags.DEFINE_string("peer", None, "(A peer's child process) run this peer, print JSON.")


def main() -> None:
    """Runs one peer (--peer) and prints JSON, or all peers and prints the table."""
    if FLAGS.peer:
        peer_main(globals()[f"run_{FLAGS.peer}"], FLAGS.epochs)
        return
    rows = [run_peer_process(peer, FLAGS.epochs) for peer in FLAGS.peers]
    progress.emit(table(rows, FLAGS.epochs))


def peer_main(run_peer, epochs: int) -> None:
    """In a peer's child process: runs it and prints its result as JSON with its peak RSS."""
    import resource

    result = run_peer(epochs)
    # ru_maxrss is in KiB on Linux; DataLoader workers are children of this process.
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_kib += resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    progress.emit(json.dumps({**result, "peak_rss_mb": peak_kib / 1024}))


if __name__ == "__main__":
    errors.run_command(main, _define_flags)
