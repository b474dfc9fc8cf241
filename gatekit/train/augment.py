"""Batched view augmentation on the training device (kornia), the paper's pipeline (docs/method.md section 6).

RandomResizedCrop(scale (min_scale, 1), bicubic) -> ColorJitter(0.4, 0.4, 0.2, 0.1) p 0.8 ->
Grayscale p 0.2 -> GaussianBlur sigma U[0.1, 2] with the view's own p -> Solarize p 0.1 ->
HorizontalFlip p 0.5 -> Normalize. Input: a uint8 (N, H, W, 3) batch; output: float (N, 3, S, S).
"""

from __future__ import annotations

import torch
from torch import nn


def to_float_nchw(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) in [0, 1]."""
    return images.permute(0, 3, 1, 2).float().div_(255.0)


class ViewAugmentation(nn.Module):
    def __init__(
        self,
        size: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        *,
        min_scale: float = 0.2,
        max_scale: float = 1.0,
        blur_p: float = 0.0,
        solarize_p: float = 0.1,
        jitter_p: float = 0.8,
        grayscale_p: float = 0.2,
    ):
        super().__init__()
        import kornia.augmentation as K  # training-side dependency only

        blur_kernel = 13  # covers 3 sigma at sigma 2, as PIL's GaussianBlur(radius=sigma) does
        ops: list[nn.Module] = [
            K.RandomResizedCrop((size, size), scale=(min_scale, max_scale), resample="BICUBIC"),
            K.ColorJitter(0.4, 0.4, 0.2, 0.1, p=jitter_p),
            K.RandomGrayscale(p=grayscale_p),
        ]
        if blur_p > 0:
            ops.append(K.RandomGaussianBlur((blur_kernel, blur_kernel), (0.1, 2.0), p=blur_p))
        if solarize_p > 0:
            ops.append(K.RandomSolarize(thresholds=0.0, additions=0.0, p=solarize_p))  # threshold 0.5 = PIL's 128
        ops += [K.RandomHorizontalFlip(p=0.5), K.Normalize(torch.tensor(mean), torch.tensor(std))]
        self.ops = nn.Sequential(*ops)

    @torch.no_grad()
    def forward(self, images_uint8_nhwc: torch.Tensor) -> torch.Tensor:
        x = to_float_nchw(images_uint8_nhwc)
        return self.ops(x).clamp_(-20, 20).contiguous()


def normalize(images_uint8_nhwc: torch.Tensor, mean, std) -> torch.Tensor:
    """The deterministic evaluation transform: scale to [0, 1] and normalise."""
    x = to_float_nchw(images_uint8_nhwc)
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s
