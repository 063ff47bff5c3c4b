"""Decode once for training: the references' random crop cut from stored uint8 images.

``train.transform=reference`` trains on open_clip's ``preprocess_train``
(``RandomResizedCrop(S, scale=(0.9, 1.0), ratio=(3/4, 4/3), bicubic)``, ``ToTensor``,
``Normalize``), so every epoch decodes every training image from its file again; on a CPU that
decoding competes with the training step for the same cores. With ``train`` in ``decode_once``
each training image is decoded once, resized whole (not cropped, aspect not kept) to ``S x S``
and stored as uint8 beside its original size. Each time a sample is drawn:

1. the crop box is drawn exactly as ``RandomResizedCrop.get_params`` draws it for the original
   size (same area and aspect distribution, same RNG calls);
2. the box is mapped onto the stored image (scaled by ``S / W`` and ``S / H``, kept fractional)
   and resampled to ``S x S`` (bicubic ``grid_sample``, clamped to [0, 255] as PIL clamps; a
   ``DataLoader`` batch in one call, ``__getitems__``);
3. ``ToTensor`` + ``Normalize`` are applied (``/ 255``, mean, std).

The crop covers exactly the region of the image the reference's covers, and the
result is the reference's up to resampling: the pixels are resampled twice (original -> S x S
-> crop) instead of once. It is therefore an option (``decode_once=[val,train]``), not the
default: the reference's own route stays the default, exact to the reference.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode, RandomResizedCrop, Resize

from taskmerge.data.decoded import UInt8Images, decoded_split


class CroppedUInt8(Dataset):
    """``(normalized crop, label)`` of a split decoded whole to ``S x S`` uint8 images.

    Args:
        images: The decoded split (uint8 ``(N, 3, S, S)``, with each image's original size).
        crop: The reference's ``RandomResizedCrop`` (its size, scale and ratio are used).
        mean: Per-channel mean of the preprocessing's ``Normalize``, shape ``(3, 1, 1)``.
        std: Per-channel std, shape ``(3, 1, 1)``.
    """

    #: Read from a memory-mapped array and cropped per batch: cheap enough for the training
    #: process itself on a CPU (:func:`taskmerge.finetune.loop.loader_workers`).
    in_memory = True

    def __init__(
        self, images: UInt8Images, crop: RandomResizedCrop, mean: torch.Tensor,
        std: torch.Tensor,
    ) -> None:  # fmt: skip
        if images.sizes is None:
            raise ValueError("the decoded split has no original image sizes")
        self.images, self.crop = images, crop
        self.mean, self.std = mean.reshape(-1, 1, 1), std.reshape(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.images)

    def box(self, index: int) -> tuple[float, float, float, float]:
        """A crop box ``(top, left, height, width)`` on the stored image, in stored pixels
        (fractional): the box ``RandomResizedCrop.get_params`` draws for the original size,
        scaled by ``S / H`` and ``S / W``."""
        width, height = (int(v) for v in self.images.sizes[index])  # type: ignore[index]
        shape_only = torch.empty(1, 1, 1).expand(1, height, width)  # no H x W allocation
        top, left, h, w = RandomResizedCrop.get_params(
            shape_only, list(self.crop.scale), list(self.crop.ratio)
        )
        stored_h, stored_w = self.images.images.shape[-2:]
        sy, sx = stored_h / height, stored_w / width
        return top * sy, left * sx, h * sy, w * sx

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        """A batch of samples (what a ``DataLoader`` asks for): the boxes drawn in order, as one
        sample after the other would draw them, then one resampling for the whole batch."""
        boxes = [self.box(index) for index in indices]
        samples = [self.images[index] for index in indices]
        images = torch.stack([image for image, _ in samples]).float()
        cropped = crop_resize(images, boxes, tuple(self.crop.size))
        normalized = (cropped.clamp_(0, 255).div_(255) - self.mean) / self.std
        return [(image, label) for image, (_, label) in zip(normalized, samples, strict=True)]


def crop_resize(
    images: torch.Tensor, boxes: list[tuple[float, float, float, float]], size: tuple[int, int]
) -> torch.Tensor:
    """The region ``box = (top, left, height, width)`` (pixel edges, fractional) of each of a
    batch of ``(N, C, H, W)`` images resampled to ``size`` (bicubic, as ``resized_crop``; the
    crop is at most a few percent smaller than the output, so no antialiasing is needed)."""
    stored_h, stored_w = images.shape[-2:]
    theta = torch.tensor(
        [[[width / stored_w, 0.0, (2 * left + width) / stored_w - 1],
          [0.0, height / stored_h, (2 * top + height) / stored_h - 1]]
         for top, left, height, width in boxes],
        dtype=images.dtype,
    )  # fmt: skip
    grid = torch.nn.functional.affine_grid(
        theta, [images.shape[0], images.shape[1], *size], align_corners=False
    )
    return torch.nn.functional.grid_sample(
        images, grid, mode="bicubic", padding_mode="border", align_corners=False
    )


def whole_image_resize(crop: RandomResizedCrop) -> Resize:
    """The stored geometry: the whole image resized to the crop's output size (bicubic)."""
    return Resize(tuple(crop.size), interpolation=InterpolationMode.BICUBIC, antialias=True)


def decoded_train_split(
    base: Dataset, crop: RandomResizedCrop, mean: torch.Tensor, std: torch.Tensor, path: Path,
    num_workers: int = 0,
) -> CroppedUInt8:  # fmt: skip
    """The training split decoded once into ``path`` (or read back), seen through the crop."""
    images = decoded_split(base, whole_image_resize(crop), path, num_workers, keep_sizes=True)
    return CroppedUInt8(images, crop, mean, std)
