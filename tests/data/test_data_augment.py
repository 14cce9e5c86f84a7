"""Batched tensor augmentation: pad-and-crop and flip, seeded, per sample."""

from __future__ import annotations

import torch

from learnloss.data.augment import augment_batch
from learnloss.data.dataset import AugmentSpec


def test_crop_is_a_shifted_window_of_the_zero_padded_image():
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5) + 1
    out = augment_batch(x, AugmentSpec(pad=2), generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        windows = [padded[i, :, r : r + 5, c : c + 5] for r in range(5) for c in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)


def test_samples_get_their_own_offsets_and_flips():
    x = torch.randn(64, 1, 6, 6)
    out = augment_batch(x, AugmentSpec(pad=1, flip=True), generator=torch.Generator().manual_seed(1))
    unchanged = [torch.equal(out[i], x[i]) for i in range(64)]
    assert 0 < sum(unchanged) < 64


def test_flip_only_mirrors_width():
    x = torch.randn(200, 2, 4, 4)
    out = augment_batch(x, AugmentSpec(flip=True), generator=torch.Generator().manual_seed(2))
    flipped = torch.tensor([torch.equal(out[i], x[i].flip(2)) for i in range(200)])
    kept = torch.tensor([torch.equal(out[i], x[i]) for i in range(200)])
    assert bool((flipped | kept).all()) and 60 < int(flipped.sum()) < 140


def test_same_generator_seed_same_augmentation_and_vectors_untouched():
    x = torch.randn(8, 3, 8, 8)
    spec = AugmentSpec(pad=2, flip=True)
    a = augment_batch(x, spec, generator=torch.Generator().manual_seed(3))
    b = augment_batch(x, spec, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    vectors = torch.randn(8, 10)
    assert augment_batch(vectors, spec) is vectors

