"""A plain Flower app in the style of Flower's PyTorch quickstart, as a timing reference.

It trains the same model on the same member folders with the same recipe as fractofl,
but with nothing of fractofl's machinery: a ``ClientApp`` with ``@app.train`` and
``@app.evaluate``, a ``ServerApp`` that calls ``FedAvg(...).start(...)``, and images
loaded the quickstart way (PIL + torchvision transforms, cached per process).

``run_simulation`` gives apps an empty ``context.run_config``, so the settings are module
constants, as in the quickstart. Only the data set, the number of rounds and the timing
file come from the environment (``PLAIN_DATA_ROOT``, ``PLAIN_ROUNDS``, ``PLAIN_TIMINGS``),
so that the benchmark harness can point them into its work folder.

Run it as ``python bench/programs/plain_flower_app.py``; it writes a JSON file with the
``time.monotonic()`` of every centralized evaluation (round 0 included) and the final
test accuracy.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation
from torch import nn
from torch.utils.data import DataLoader, Dataset, random_split
from torchvision import datasets, transforms

from fractofl.core.model.architectures import build_model

# --- settings (the quickstart hard-codes them) -------------------------------------------
DATA_ROOT = Path(os.environ.get("PLAIN_DATA_ROOT", "data/synthetic")).resolve()
NUM_ROUNDS = int(os.environ.get("PLAIN_ROUNDS", "3"))
TIMINGS_FILE = os.environ.get("PLAIN_TIMINGS", "plain-timings.json")
NUM_MEMBERS = 4
CLASSES = ["fatigue", "ductile", "cleavage", "intergranular"]
IMAGE_SIZE = 64
LOCAL_EPOCHS = 2
BATCH_SIZE = 32
LR = 0.05
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
VAL_FRACTION = 0.15
SEED = 42
MEMBER_CPUS = 1

TRANSFORM = transforms.Compose(
    [
        transforms.Grayscale(num_output_channels=1),
        transforms.Resize((IMAGE_SIZE, IMAGE_SIZE)),
        transforms.ToTensor(),
        transforms.Normalize((0.5,), (0.25,)),
    ]
)


def make_net() -> nn.Module:
    """The model fractofl trains by default (small CNN, 4 classes, width 32)."""
    return build_model("small_cnn", len(CLASSES), width=32, dropout=0.2)


# --- data ---------------------------------------------------------------------------------
class Augmented(Dataset[tuple[torch.Tensor, int]]):
    """Random quarter turns and flips, the same augmentation fractofl trains with."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        turns = int(torch.randint(0, 4, ()).item())
        if turns:
            image = torch.rot90(image, turns, dims=(1, 2))
        if torch.rand(()) < 0.5:
            image = torch.flip(image, dims=(2,))
        return image, int(self.labels[index])


_CACHE: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}


def load_folder(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode an ImageFolder tree once per process into (images, labels) tensors."""
    key = str(folder)
    if key not in _CACHE:
        tree = datasets.ImageFolder(str(folder), transform=TRANSFORM)
        # ImageFolder sorts class folders by name; map them onto the taxonomy order.
        remap = {index: CLASSES.index(name) for name, index in tree.class_to_idx.items()}
        pairs = [tree[i] for i in range(len(tree))]
        images = torch.stack([image for image, _ in pairs])
        labels = torch.tensor([remap[label] for _, label in pairs], dtype=torch.long)
        _CACHE[key] = (images, labels)
    return _CACHE[key]


def load_data(partition_id: int) -> tuple[DataLoader, DataLoader]:
    """Train and validation loaders of one member (a seeded 85/15 split)."""
    images, labels = load_folder(DATA_ROOT / "members" / f"member-{partition_id:02d}")
    n_val = max(1, round(len(labels) * VAL_FRACTION))
    train_idx, val_idx = random_split(
        range(len(labels)),
        [len(labels) - n_val, n_val],
        generator=torch.Generator().manual_seed(SEED),
    )
    train_ids = torch.tensor(list(train_idx), dtype=torch.long)
    val_ids = torch.tensor(list(val_idx), dtype=torch.long)
    train_set = Augmented(images[train_ids], labels[train_ids])
    val_set = torch.utils.data.TensorDataset(images[val_ids], labels[val_ids])
    return (
        DataLoader(train_set, batch_size=BATCH_SIZE, shuffle=True),
        DataLoader(val_set, batch_size=BATCH_SIZE),
    )


# --- training -----------------------------------------------------------------------------
def train_fn(net: nn.Module, loader: DataLoader, epochs: int, lr: float) -> float:
    """SGD with momentum and weight decay; mean loss of the last epoch."""
    net.train()
    optimizer = torch.optim.SGD(
        net.parameters(), lr=lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY
    )
    criterion = nn.CrossEntropyLoss()
    loss_sum, seen = 0.0, 0
    for _ in range(epochs):
        loss_sum, seen = 0.0, 0
        for images, labels in loader:
            optimizer.zero_grad()
            loss = criterion(net(images), labels)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * labels.shape[0]
            seen += labels.shape[0]
    return loss_sum / max(seen, 1)


@torch.no_grad()
def test_fn(net: nn.Module, loader: DataLoader) -> tuple[float, float]:
    """Mean loss and accuracy."""
    net.eval()
    criterion = nn.CrossEntropyLoss(reduction="sum")
    loss, correct, seen = 0.0, 0, 0
    for images, labels in loader:
        logits = net(images)
        loss += criterion(logits, labels).item()
        correct += (logits.argmax(1) == labels).sum().item()
        seen += labels.shape[0]
    return loss / seen, correct / seen


# --- ClientApp ----------------------------------------------------------------------------
app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received model on this member's data."""
    torch.set_num_threads(MEMBER_CPUS)
    net = make_net()
    net.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    trainloader, _ = load_data(int(context.node_config["partition-id"]))
    lr = float(msg.content["config"].get("lr", LR))
    train_loss = train_fn(net, trainloader, LOCAL_EPOCHS, lr)
    metrics = MetricRecord(
        {"train_loss": train_loss, "num-examples": len(trainloader.dataset)}  # type: ignore[arg-type]
    )
    content = RecordDict({"arrays": ArrayRecord(net.state_dict()), "metrics": metrics})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the received model on this member's validation split."""
    torch.set_num_threads(MEMBER_CPUS)
    net = make_net()
    net.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    _, valloader = load_data(int(context.node_config["partition-id"]))
    loss, acc = test_fn(net, valloader)
    metrics = MetricRecord(
        {"eval_loss": loss, "eval_acc": acc, "num-examples": len(valloader.dataset)}  # type: ignore[arg-type]
    )
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)


# --- ServerApp ----------------------------------------------------------------------------
server = ServerApp()
EVAL_TIMES: list[float] = []
EVAL_ACCURACY: list[float] = []


def global_evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
    """Centralized evaluation on the coordinator test set; records when it ran."""
    net = make_net()
    net.load_state_dict(arrays.to_torch_state_dict())
    images, labels = load_folder(DATA_ROOT / "coordinator-test")
    loader = DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=BATCH_SIZE)
    loss, acc = test_fn(net, loader)
    EVAL_TIMES.append(time.monotonic())
    EVAL_ACCURACY.append(acc)
    return MetricRecord({"accuracy": acc, "loss": loss})


@server.main()
def main(grid: Grid, context: Context) -> None:
    """FedAvg over all members for ``NUM_ROUNDS`` rounds; write the timing file."""
    torch.manual_seed(SEED)
    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=1.0)
    strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(make_net().state_dict()),
        num_rounds=NUM_ROUNDS,
        train_config=ConfigRecord({"lr": LR}),
        evaluate_fn=global_evaluate,
    )
    Path(TIMINGS_FILE).write_text(
        json.dumps(
            {"rounds": NUM_ROUNDS, "eval_times": EVAL_TIMES, "test_accuracy": EVAL_ACCURACY},
            indent=2,
        )
    )


if __name__ == "__main__":
    # The harness sets FLWR_TELEMETRY_ENABLED=0 and FLWR_DISABLE_UPDATE_CHECK=1 in the
    # environment: Flower reads them when it is imported, before any code here runs.
    run_simulation(
        server_app=server,
        client_app=app,
        num_supernodes=NUM_MEMBERS,
        backend_config={
            "client_resources": {"num_cpus": MEMBER_CPUS, "num_gpus": 0.0},
            "init_args": {"num_cpus": os.cpu_count() or 1, "include_dashboard": False},
        },
    )
