"""Knowledge distillation (Hinton et al. 2015) as a loss hook of :func:`prunekit.train.fit`.

The loss of a batch is ``(1 − α) · CE(student, labels) + α · T² · KL(softmax(t / T) ‖ softmax(s / T))``
with teacher logits ``t`` and student logits ``s``; the ``T²`` keeps the gradient scale of the soft term
independent of the temperature. The teacher runs in eval mode without gradients on the same (augmented)
batch as the student; under DDP every rank holds its own copy and distils its own shard.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.train.callbacks import Callback


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T² · KL(softmax(teacher / T) ‖ softmax(student / T))``, averaged over the batch."""
    log_student = F.log_softmax(student.float() / temperature, dim=1)
    log_teacher = F.log_softmax(teacher.float() / temperature, dim=1)
    return F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True) * temperature ** 2


class KnowledgeDistillation(Callback):
    """Mixes the label loss with :func:`distillation_loss` against ``teacher`` (weight ``alpha``).

    Side effects: on fit start the teacher is moved to the student's device, put in eval mode and its
    parameters stop requiring gradients; it is never updated.
    """

    def __init__(self, teacher: nn.Module, alpha: float = 0.9, temperature: float = 4.0):
        self.teacher, self.alpha, self.temperature = teacher, alpha, temperature

    def on_fit_start(self, model: nn.Module, config) -> None:
        device = next(model.parameters()).device
        self.teacher.to(device).eval().requires_grad_(False)

    def training_loss(self, x: torch.Tensor, logits: torch.Tensor, y: torch.Tensor,
                      loss: torch.Tensor) -> torch.Tensor:
        self.teacher.eval()  # a caller may have switched it back
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        soft = distillation_loss(logits, teacher_logits, self.temperature)
        return (1.0 - self.alpha) * loss + self.alpha * soft
