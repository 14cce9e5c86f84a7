"""A reference-style Learning Loss cycle: the baseline every speed claim of learnloss is a ratio against.

This is the active-learning cycle of Yoo & Kweon (CVPR 2019) written the way public reproductions write it —
modelled on github.com/Mephisto405/Learning-Loss-for-Active-Learning (``main.py``), re-written here, not
copied, and without torchvision:

* a map-style ``Dataset`` over ``(N, H, W, 3)`` uint8 arrays that returns one PIL image at a time, put through
  per-image transforms (random horizontal flip, random 32×32 crop after 4 pixels of zero padding, to-tensor,
  normalise) written below with Pillow and numpy;
* ``DataLoader``s as the reference builds them: a ``SubsetRandomSampler`` over the labeled set (batch 128), a
  sequential sampler over a random subset of the unlabeled pool for scoring, the test split in order (batch
  128), ``num_workers=0`` (the reference's default) and ``pin_memory`` on CUDA;
* two SGD optimisers (target and module; lr 0.1, momentum 0.9, weight decay 5e-4) with a ``MultiStepLR`` each,
  created anew every cycle, the models warm-started from the previous cycle;
* the reference's loss-prediction loss (pairs made by flipping the batch, target sign ``2·sign(max(0, Δl)) − 1``,
  margin 1, mean over the pairs), weight 1, features detached from the stop-gradient epoch on;
* fp32, NCHW, evaluation with one ``.item()`` per batch, scores gathered with ``torch.cat`` and ranked by
  ``argsort``; ``cudnn.deterministic`` on CUDA as the reference sets it.

What is *shared* with learnloss, so that both sides do the same arithmetic: the target model is learnloss's
own (``learnloss.models.build_model``: the CIFAR-style ResNet-18 by default, identical in layout to the
reference's ``models/resnet.py``) and the loss prediction module is the one ``learnloss.attach`` puts on its
default taps (per tap: global average pooling → FC(128) → ReLU; concatenated; FC → 1 — the reference's
``LossNet``). The forward hooks replace the reference's ``return out, [out1, out2, out3, out4]``; that changes
nothing in what is computed.

Two details follow modern PyTorch and learnloss's convention rather than the 2019 script, so that both sides
train the same epochs the same way: the LR schedulers step after each epoch (the reference stepped them first,
as PyTorch < 1.1 wanted), and the features are detached from epoch ``stop_grad_epoch`` on (counting from 0).

``prepare_data`` is the one place the benchmark's data is made, for both sides alike: a learnloss dataset
(Fashion-MNIST, digits or synthetic images) centre-padded with zeros to ``image_size`` and repeated to three
channels (Fashion-MNIST 28×28 grey → 32×32 RGB), with per-channel mean and std of the training split.

Run on its own (one reference run, a JSON line of phase timings on stdout)::

    python benchmarks/reference_style.py --labeled 200 --query 200 --cycles 2 --epochs 2 --test 10000 --subset 2000
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import nn
from torch.utils.data import DataLoader, Sampler, SubsetRandomSampler

# ----------------------------------------------------------------------------------------------------- data


@dataclass
class BenchData:
    """The benchmark's data, the same for both sides: uint8 ``(N, 3, S, S)`` images, labels, channel statistics."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: list[str]
    mean: torch.Tensor
    std: torch.Tensor

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[-1])

    @property
    def crop_padding(self) -> int:
        """Zero padding of the random crop: 4 pixels at 32×32, as the reference's ``RandomCrop(32, padding=4)``."""
        return max(1, self.image_size // 8)


def _to_rgb_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """``(N, C, H, W)`` uint8 images centre-padded with zeros to ``size`` × ``size`` and repeated to 3 channels."""
    height, width = x.shape[-2:]
    if height > size or width > size:
        raise SystemExit(f"images are {height}×{width}, larger than --image-size {size}")
    top, left = (size - height) // 2, (size - width) // 2
    x = F.pad(x, (left, size - width - left, top, size - height - top))
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    elif x.shape[1] != 3:
        raise SystemExit(f"images have {x.shape[1]} channels; the benchmark needs 1 or 3")
    return x.contiguous()


def prepare_data(dataset: str = "fashion-mnist", data_dir: str | None = None, image_size: int = 32,
                 test: int | None = 10000, train_size: int = 5000, seed: int = 0) -> BenchData:
    """The benchmark's data: ``dataset`` (a learnloss dataset name, or ``synthetic``) as RGB ``image_size`` squares,
    the first ``test`` test images; ``train_size`` is the pool of ``synthetic`` (random images and labels)."""
    from learnloss.data.dataset import channel_stats

    if dataset == "synthetic":
        g = torch.Generator().manual_seed(seed)
        n_test = test or 1000
        x_train = torch.randint(0, 256, (train_size, 3, image_size, image_size), dtype=torch.uint8, generator=g)
        x_test = torch.randint(0, 256, (n_test, 3, image_size, image_size), dtype=torch.uint8, generator=g)
        y_train = torch.randint(0, 10, (train_size,), generator=g)
        y_test = torch.randint(0, 10, (n_test,), generator=g)
        classes = [str(c) for c in range(10)]
    else:
        import learnloss

        source = learnloss.load_dataset(dataset, data_dir, download=False)
        if source.task != "classification" or source.x_train.dim() != 4:
            raise SystemExit(f"dataset {dataset} is not an image classification dataset")
        x_train, y_train = source.x_train, source.y_train
        x_test, y_test = source.x_test[:test], source.y_test[:test]
        classes = list(source.classes)
    x_train, x_test = _to_rgb_square(x_train, image_size), _to_rgb_square(x_test, image_size)
    mean, std = channel_stats(x_train)
    return BenchData(dataset, x_train, y_train.long(), x_test, y_test.long(), classes, mean, std)


# ------------------------------------------------------------------------- per-image PIL transforms (no torchvision)


class Compose:
    """Apply transforms one after the other."""

    def __init__(self, transforms: Sequence[Callable[[Any], Any]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: Any) -> Any:
        for transform in self.transforms:
            image = transform(image)
        return image


class RandomHorizontalFlip:
    """Mirror a PIL image left-right with probability ``p`` (the draw comes from torch's global generator)."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, image: Image.Image) -> Image.Image:
        if float(torch.rand(1)) < self.p:
            return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return image


class RandomCrop:
    """Pad a PIL image with ``padding`` black pixels on every side, then cut a random ``size`` × ``size`` window."""

    def __init__(self, size: int, padding: int = 0) -> None:
        self.size, self.padding = size, padding

    def __call__(self, image: Image.Image) -> Image.Image:
        if self.padding > 0:
            image = ImageOps.expand(image, border=self.padding, fill=0)
        width, height = image.size
        top = int(torch.randint(0, height - self.size + 1, (1,)))
        left = int(torch.randint(0, width - self.size + 1, (1,)))
        return image.crop((left, top, left + self.size, top + self.size))


class ToTensor:
    """A PIL image as a float ``(C, H, W)`` tensor in [0, 1]."""

    def __call__(self, image: Image.Image) -> torch.Tensor:
        array = np.array(image, dtype=np.uint8, copy=True)
        if array.ndim == 2:
            array = array[:, :, None]
        return torch.from_numpy(array).permute(2, 0, 1).contiguous().float().div(255)


class Normalize:
    """Subtract the per-channel mean and divide by the per-channel std (on a copy)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(list(mean)).view(-1, 1, 1)
        self.std = torch.tensor(list(std)).view(-1, 1, 1)

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.clone().sub_(self.mean).div_(self.std)


class ImageArrayDataset(torch.utils.data.Dataset):
    """``(image, label)`` pairs of ``(N, H, W, 3)`` uint8 arrays, each image a PIL image put through ``transform``."""

    def __init__(self, images: np.ndarray, labels: Sequence[int], transform: Callable[[Image.Image], torch.Tensor]):
        self.images, self.labels, self.transform = images, list(labels), transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[index])), self.labels[index]


class SubsetSequentialSampler(Sampler[int]):
    """The given indices, in their order."""

    def __init__(self, indices: Sequence[int]) -> None:
        self.indices = list(indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


# ------------------------------------------------------------------------------------------------ the loss


def loss_pred_loss(predicted: torch.Tensor, target: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """The reference's pairwise ranking loss: sample ``i`` of the batch against sample ``B-1-i``, the sign of the
    pair's true-loss difference (ties count as −1), hinge with ``margin``, averaged over the ``B // 2`` pairs."""
    half = len(predicted) // 2
    predicted_gap = (predicted - predicted.flip(0))[:half]
    target_gap = (target - target.flip(0))[:half].detach()
    sign = 2 * torch.sign(torch.clamp(target_gap, min=0)) - 1
    return torch.clamp(margin - sign * predicted_gap, min=0).sum() / max(half, 1)


# ------------------------------------------------------------------------------------------------ the loop


@dataclass
class ReferenceSettings:
    model: str = "resnet18"
    labeled: int = 200
    query: int = 200
    cycles: int = 2
    epochs: int = 2
    subset: int = 2000
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: tuple[int, ...] = (2,)
    stop_grad_epoch: int | None = 1
    margin: float = 1.0
    lpm_weight: float = 1.0
    workers: int = 0
    device: str = "auto"
    seed: int = 0
    deterministic: bool = True


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_reference(data: BenchData, settings: ReferenceSettings) -> dict[str, Any]:
    """Run the reference-style cycles over ``data`` and return the time of each phase of each cycle."""
    import learnloss
    from learnloss.models import build_model, default_taps

    s = settings
    device = torch.device("cuda" if s.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if s.device == "auto" else s.device))
    random.seed(s.seed)
    torch.manual_seed(s.seed)
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = s.deterministic
        torch.backends.cudnn.benchmark = False
    pin = device.type == "cuda"

    mean, std = data.mean.tolist(), data.std.tolist()
    train_transform = Compose([RandomHorizontalFlip(), RandomCrop(data.image_size, padding=data.crop_padding),
                               ToTensor(), Normalize(mean, std)])
    test_transform = Compose([ToTensor(), Normalize(mean, std)])
    train_images = data.x_train.permute(0, 2, 3, 1).contiguous().numpy()  # HWC, as torchvision's CIFAR10 keeps it
    test_images = data.x_test.permute(0, 2, 3, 1).contiguous().numpy()
    train_set = ImageArrayDataset(train_images, data.y_train.tolist(), train_transform)
    unlabeled_set = ImageArrayDataset(train_images, data.y_train.tolist(), test_transform)
    test_set = ImageArrayDataset(test_images, data.y_test.tolist(), test_transform)

    indices = list(range(len(train_set)))
    random.shuffle(indices)
    labeled, unlabeled = indices[:s.labeled], indices[s.labeled:]
    train_loader = DataLoader(train_set, batch_size=s.batch_size, sampler=SubsetRandomSampler(labeled),
                              num_workers=s.workers, pin_memory=pin)
    test_loader = DataLoader(test_set, batch_size=s.batch_size, num_workers=s.workers, pin_memory=pin)

    backbone = build_model(s.model, 3, len(data.classes)).to(device)
    example = test_transform(Image.fromarray(test_images[0]))[None].repeat(2, 1, 1, 1).to(device)
    ll = learnloss.attach(backbone, default_taps(backbone), example)
    module = ll.lpm
    criterion = nn.CrossEntropyLoss(reduction="none")

    def train_epoch(optimizers: dict[str, torch.optim.Optimizer], epoch: int) -> None:
        backbone.train()
        module.train()
        for inputs, labels in train_loader:
            inputs, labels = inputs.to(device), labels.to(device)
            optimizers["backbone"].zero_grad()
            optimizers["module"].zero_grad()
            scores = backbone(inputs)
            target_loss = criterion(scores, labels)
            detach = s.stop_grad_epoch is not None and epoch >= s.stop_grad_epoch
            pred_loss = ll.predicted_loss(detach_features=detach).view(-1)
            backbone_loss = torch.sum(target_loss) / target_loss.size(0)
            module_loss = loss_pred_loss(pred_loss, target_loss, margin=s.margin)
            loss = backbone_loss + s.lpm_weight * module_loss
            loss.backward()
            optimizers["backbone"].step()
            optimizers["module"].step()

    def test() -> float:
        backbone.eval()
        module.eval()
        total = correct = 0
        with torch.no_grad():
            for inputs, labels in test_loader:
                inputs, labels = inputs.to(device), labels.to(device)
                scores = backbone(inputs)
                _, preds = torch.max(scores.data, 1)
                total += labels.size(0)
                correct += (preds == labels).sum().item()
        return correct / max(total, 1)

    def get_uncertainty(loader: DataLoader) -> torch.Tensor:
        backbone.eval()
        module.eval()
        uncertainty = torch.tensor([], device=device)
        with torch.no_grad():
            for inputs, _ in loader:
                inputs = inputs.to(device)
                backbone(inputs)
                pred_loss = ll.predicted_loss().view(-1)
                uncertainty = torch.cat((uncertainty, pred_loss), 0)
        return uncertainty.cpu()

    cycles = []
    for cycle in range(s.cycles):
        _sync(device)
        cycle_start = time.perf_counter()
        optim_backbone = torch.optim.SGD(backbone.parameters(), lr=s.lr, momentum=s.momentum,
                                         weight_decay=s.weight_decay)
        optim_module = torch.optim.SGD(module.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
        schedulers = [torch.optim.lr_scheduler.MultiStepLR(optim_backbone, milestones=list(s.milestones)),
                      torch.optim.lr_scheduler.MultiStepLR(optim_module, milestones=list(s.milestones))]
        optimizers = {"backbone": optim_backbone, "module": optim_module}
        for epoch in range(s.epochs):
            train_epoch(optimizers, epoch)
            for scheduler in schedulers:
                scheduler.step()
        _sync(device)
        train_seconds = time.perf_counter() - cycle_start
        n_labeled = len(labeled)

        start = time.perf_counter()
        accuracy = test()
        _sync(device)
        eval_seconds = time.perf_counter() - start

        score_seconds, scored = 0.0, 0
        if cycle < s.cycles - 1:
            start = time.perf_counter()
            random.shuffle(unlabeled)
            subset = unlabeled[:s.subset]
            unlabeled_loader = DataLoader(unlabeled_set, batch_size=s.batch_size,
                                          sampler=SubsetSequentialSampler(subset), num_workers=s.workers,
                                          pin_memory=pin)
            uncertainty = get_uncertainty(unlabeled_loader)
            order = np.argsort(uncertainty.numpy())
            ranked = torch.tensor(subset)[order]
            labeled += ranked[-s.query:].tolist()
            unlabeled = ranked[:-s.query].tolist() + unlabeled[s.subset:]
            train_loader = DataLoader(train_set, batch_size=s.batch_size, sampler=SubsetRandomSampler(labeled),
                                      num_workers=s.workers, pin_memory=pin)
            _sync(device)
            score_seconds, scored = time.perf_counter() - start, len(subset)
        cycles.append({
            "cycle": cycle, "n_labeled": n_labeled, "train_seconds": train_seconds,
            "train_images": n_labeled * s.epochs, "eval_seconds": eval_seconds, "eval_images": len(test_set),
            "score_seconds": score_seconds, "score_images": scored,
            "wall_seconds": time.perf_counter() - cycle_start, "test_accuracy": accuracy,
        })
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"device": str(device), "device_name": name,
            "precision": "fp32", "channels_last": False, "batch_size": s.batch_size, "eval_batch_size": s.batch_size,
            "workers": s.workers, "cycles": cycles}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--labeled", type=int, default=200)
    parser.add_argument("--query", type=int, default=200)
    parser.add_argument("--cycles", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--test", type=int, default=10000)
    parser.add_argument("--subset", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = prepare_data(args.dataset, args.data_dir, args.image_size, args.test,
                        args.labeled + args.query * (args.cycles - 1) + args.subset, args.seed)
    settings = ReferenceSettings(model=args.model, labeled=args.labeled, query=args.query, cycles=args.cycles,
                                 epochs=args.epochs, subset=args.subset, batch_size=args.batch_size,
                                 milestones=(round(args.epochs * 0.8),), stop_grad_epoch=round(args.epochs * 0.6),
                                 workers=args.workers, device=args.device, seed=args.seed)
    print(json.dumps(run_reference(data, settings)))


if __name__ == "__main__":
    main()
