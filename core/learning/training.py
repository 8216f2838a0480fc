"""Training and evaluation as plain functions: they know nothing of Flower."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fractofl.core.images.tiles import tile_mean_log_probabilities
from fractofl.core.learning.metrics import accuracy, confusion_matrix, macro_f1
from fractofl.core.learning.precision import FULL_PRECISION, Precision

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class TrainResult:
    """Mean loss and accuracy over the last local epoch, and that epoch's example count."""

    loss: float
    accuracy: float
    examples: int


@dataclass(frozen=True)
class EvalResult:
    """Loss, accuracy, macro-F1 and the confusion matrix ``[true, predicted]``."""

    loss: float
    accuracy: float
    macro_f1: float
    confusion: np.ndarray
    examples: int


def train(
    model: nn.Module,
    loader: Batches,
    epochs: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    device: torch.device,
    proximal_mu: float = 0.0,
    precision: Precision = FULL_PRECISION,
    logit_offset: torch.Tensor | None = None,
    trained_part: nn.Module | None = None,
) -> TrainResult:
    """Train ``model`` in place with SGD for ``epochs`` passes over ``loader``.

    With ``proximal_mu > 0`` the loss gets FedProx's term ``mu/2 * ||w - w_start||^2``,
    ``w_start`` being the weights the model had on entry (the global model). With a mixed
    ``precision`` the forward pass runs under autocast; the weights stay float32. A
    ``logit_offset`` (one value per class, :func:`fractofl.core.learning.loss.logit_offset`)
    is added to the logits inside the loss only; the reported accuracy uses the logits.
    With a ``trained_part`` (one of ``model``'s modules) only that part learns: the rest
    runs in eval mode, its BatchNorm statistics included, and gets no gradients.
    """
    if epochs < 1:
        raise ValueError(f"train.local_epochs={epochs} must be at least 1")
    learning = model if trained_part is None else trained_part
    model.to(device).train(trained_part is None)
    learning.train()
    own = {id(p) for p in learning.parameters()}
    frozen = [p for p in model.parameters() if p.requires_grad and id(p) not in own]
    for p in frozen:
        p.requires_grad_(False)
    try:
        return _epochs(
            model,
            learning,
            loader,
            epochs,
            torch.optim.SGD(
                learning.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
            ),
            device,
            proximal_mu,
            precision,
            logit_offset,
        )
    finally:
        for p in frozen:
            p.requires_grad_(True)


def _epochs(
    model: nn.Module,
    learning: nn.Module,
    loader: Batches,
    epochs: int,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    proximal_mu: float,
    precision: Precision,
    logit_offset: torch.Tensor | None,
) -> TrainResult:
    """:func:`train`'s loop; ``learning`` is the part of ``model`` that learns."""
    anchor = [p.detach().clone() for p in learning.parameters()] if proximal_mu > 0 else []
    criterion = nn.CrossEntropyLoss()
    offset = None if logit_offset is None else logit_offset.to(device)
    scaler = precision.scaler(device)
    loss_sum, correct, seen = 0.0, 0, 0
    for _ in range(epochs):
        # Kept on the device and read once per epoch: a .item() per step would make the
        # CPU wait for the GPU at every step.
        epoch_loss = torch.zeros((), dtype=torch.float64, device=device)
        epoch_correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad(set_to_none=True)
            with precision.autocast(device):
                logits = model(images)
                loss = criterion(logits if offset is None else logits + offset, labels)
            objective = loss
            if anchor:
                drift = sum(
                    torch.sum((p - a) ** 2)
                    for p, a in zip(learning.parameters(), anchor, strict=True)
                )
                objective = loss + 0.5 * proximal_mu * drift
            scaler.scale(objective).backward()
            scaler.step(optimizer)
            scaler.update()
            epoch_loss += loss.detach().double() * labels.shape[0]
            epoch_correct += (logits.detach().argmax(dim=1) == labels).sum()
            seen += int(labels.shape[0])
        loss_sum, correct = float(epoch_loss.item()), int(epoch_correct.item())
    if seen == 0:
        raise ValueError("the training loader yielded no examples")
    return TrainResult(loss=loss_sum / seen, accuracy=correct / seen, examples=seen)


@dataclass(frozen=True)
class ScoredExamples:
    """One evaluation pass: every example's class scores and label (on the CPU) and the
    summed loss. Evaluation and calibration both start from it, so one pass serves both."""

    scores: torch.Tensor
    labels: torch.Tensor
    loss_sum: float


def image_scores(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(B, classes) scores: logits, or the tiles' mean log-probabilities for (B, T, C, S, S)."""
    if images.dim() == 5:
        return tile_mean_log_probabilities(model, images)
    return model(images).float()


@torch.no_grad()
def score_examples(model: nn.Module, loader: Batches, device: torch.device) -> ScoredExamples:
    """Score every example of ``loader`` without changing ``model``; an image given as
    tiles is judged by their mean (its loss is that mean's negative log-likelihood)."""
    model.to(device).eval()
    loss_sum = 0.0
    scores: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    for images, targets in loader:
        images, targets = images.to(device), targets.to(device)
        batch_scores = image_scores(model, images)
        if images.dim() == 5:
            loss = F.nll_loss(batch_scores, targets, reduction="sum")
        else:
            loss = F.cross_entropy(batch_scores, targets, reduction="sum")
        loss_sum += float(loss.item())
        scores.append(batch_scores.cpu())
        labels.append(targets.cpu())
    if not labels:
        raise ValueError("the evaluation loader yielded no examples")
    return ScoredExamples(torch.cat(scores), torch.cat(labels), loss_sum)


def eval_result(scored: ScoredExamples, num_classes: int) -> EvalResult:
    """Loss, accuracy, macro-F1 and confusion matrix of a scoring pass."""
    predicted = scored.scores.argmax(dim=1)
    matrix = confusion_matrix(scored.labels.numpy(), predicted.numpy(), num_classes)
    examples = int(matrix.sum())
    return EvalResult(
        loss=scored.loss_sum / examples,
        accuracy=accuracy(matrix),
        macro_f1=macro_f1(matrix),
        confusion=matrix,
        examples=examples,
    )


def evaluate(
    model: nn.Module, loader: Batches, num_classes: int, device: torch.device
) -> EvalResult:
    """Evaluate ``model`` on ``loader`` without changing it."""
    return eval_result(score_examples(model, loader, device), num_classes)
