"""The shape of one CIFAR image, and the example input built from it (what a trace, a check or an operation
count runs the model on once).

Importing this module does not import torch (the CLI's parser reads :data:`IMAGE_SHAPE` before any command
runs); :func:`example_input` imports it when called.
"""

from __future__ import annotations

IMAGE_SHAPE = (3, 32, 32)  # channels, height, width of one CIFAR-10/100 image
EXAMPLE_INPUT_SIZE = (1, *IMAGE_SHAPE)  # one image with its batch axis: the default input of counts and traces


def example_input(batch: int = 1, device=None):
    """A float32 tensor of zeros, shape ``(batch, *IMAGE_SHAPE)``, on ``device`` (default: the CPU): the input
    a model is traced, checked or counted with. Zeros, so the result does not depend on a random seed."""
    import torch

    return torch.zeros(batch, *IMAGE_SHAPE, device=device)
