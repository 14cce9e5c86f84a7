"""The Dataset container: where its stored inputs live."""

from __future__ import annotations

import torch

from learnloss.data.dataset import Dataset


def test_inputs_become_resident_on_an_accelerator_only_when_they_fit():
    """``Dataset.resident_on``: stored inputs move to the device (as stored, uint8) when they take at most a quarter
    of its free memory; a CPU, a pool read per batch, or too little memory leave them where they are."""
    x = torch.randint(0, 255, (40, 1, 8, 8), dtype=torch.uint8)
    y = torch.arange(40) % 3
    data = Dataset("toy", x[:30], y[:30], x[30:], y[30:], ["a", "b", "c"])
    meta = torch.device("meta")  # stands in for an accelerator: CI has none
    moved = data.resident_on(meta, free_bytes=4 * x.numel())
    assert moved.x_train.device.type == "meta" and moved.x_test.device.type == "meta"
    assert moved.x_train.dtype == torch.uint8 and moved.y_train.device.type == "cpu"  # targets stay on the host
    assert torch.equal(moved.mean, data.mean) and torch.equal(moved.std, data.std)  # statistics are not recomputed
    assert data.resident_on(meta, free_bytes=4 * x.numel() - 1) is data  # more than a quarter: left on the host
    assert data.resident_on(torch.device("cpu")) is data
