"""Fixtures for the export tests: every small model of export_models, in eval mode with random BN statistics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from .export_models import MODELS, randomise_batchnorm


@pytest.fixture(params=list(MODELS))
def small_model(request) -> tuple[str, nn.Module, int]:
    """(name, model in eval mode with random BN statistics, input size)."""
    torch.manual_seed(0)
    build, size = MODELS[request.param]
    return request.param, randomise_batchnorm(build()), size


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These models are tiny: one thread avoids oneDNN thread oversubscription on a loaded small machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
