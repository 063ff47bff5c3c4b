"""The one-pass linearized sweep against direct evaluation: cost per image and logits error.

    python benchmarks/linear_sweep.py [--models tiny ViT-B-32] [--points 21]

A 21-point grid theta0 + a * tau (a in 0..2) scored through the linearized encoder:
* direct: one linearized forward (a JVP) per grid point and image;
* one pass: f0 and J tau once per image (one JVP), then f0 + a J tau for every a.
Costs are in forward-equivalents: seconds divided by one plain forward of the same images
(the same run, plain and one-pass interleaved, median of ``--repeats``). The logits of every
grid point are compared (relative error of the one-pass logits against the direct ones).
tau is a random task vector of typical fine-tuning size (1e-3 relative to the weights).
Models: ``tiny`` (demo CLIP, 256 images of 32 px) and open_clip ``ViT-B-32`` (random weights,
16 images of 224 px on a CPU).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import torch
from machine import machine_line  # benchmarks/machine.py

from taskmerge.models.linearized import LinearizedEncoder, jvp_features


def build(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """The image encoder and a batch of images."""
    if name == "tiny":
        from taskmerge.models.tiny import load_tiny_clip

        encoder, size, count = load_tiny_clip(tempfile.mkdtemp()).visual, 32, 256
    else:
        import open_clip

        model = open_clip.create_model(name, pretrained=None, force_quick_gelu=True)
        encoder, size, count = model.visual, model.visual.image_size[0], 16
    images = torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(0))
    return encoder.eval(), images


def timed(runs: list, repeats: int) -> list[float]:  # noqa: ANN001
    """Median seconds of each ``run()``, the runs interleaved so machine noise hits all alike."""
    values: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for run, seconds in zip(runs, values, strict=True):
            start = time.perf_counter()
            run()
            seconds.append(time.perf_counter() - start)
    return [statistics.median(seconds) for seconds in values]


@torch.no_grad()
def measure(name: str, points: int, repeats: int) -> None:
    """Print the cost and error table of one model."""
    encoder, images = build(name)
    params0 = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
    gen = torch.Generator().manual_seed(1)
    tau = {
        k: 1e-3 * v.abs().mean() * torch.randn(v.shape, generator=gen)
        for k, v in params0.items()
        if v.is_floating_point()
    }
    grid = [2 * i / (points - 1) for i in range(points)]
    head = torch.nn.functional.normalize(
        torch.randn(10, encoder(images[:1]).shape[-1], generator=gen), dim=-1
    )
    lin = LinearizedEncoder(copy.deepcopy(encoder), params0)

    def logits(features: torch.Tensor) -> torch.Tensor:
        return 100 * torch.nn.functional.normalize(features, dim=-1) @ head.T

    def plain() -> None:
        encoder(images)

    def one_pass() -> list[torch.Tensor]:
        base, (tangent,) = jvp_features(encoder, params0, images, [tau])
        return [logits(base + a * tangent) for a in grid]

    def direct() -> list[torch.Tensor]:
        out = []
        for a in grid:
            lin.load_state_dict({k: v + a * tau[k] if k in tau else v for k, v in params0.items()})
            out.append(logits(lin(images)))
        return out

    plain(), one_pass()  # warm-up
    t_plain, t_one = timed([plain, one_pass], repeats)
    (t_direct,) = timed([direct], max(1, repeats // 3))
    fast, slow = one_pass(), direct()
    error = max(((f - s).norm() / s.norm()).item() for f, s in zip(fast, slow, strict=True))
    print(f"\n{name}: {len(images)} images, {points}-point grid, {torch.get_num_threads()} threads")
    print("| route | s | forward-equivalents |\n|---|---|---|")
    print(f"| plain forward (1 point, non-linear) | {t_plain:.3f} | 1.0 |")
    print(f"| one pass (f0 + a J tau) | {t_one:.3f} | {t_one / t_plain:.2f} |")
    print(f"| direct linearized, {points} JVPs | {t_direct:.3f} | {t_direct / t_plain:.1f} |")
    print(f"| direct non-linear, {points} forwards (reference) | - | {points}.0 |")
    print(f"max relative logits error, one pass vs direct, over the grid: {error:.2e}")


def main() -> None:
    """Measure every model."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "ViT-B-32"])
    parser.add_argument("--points", type=int, default=21)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(machine_line(), flush=True)  # the date and machine of these figures
    for name in args.models:
        measure(name, args.points, args.repeats)


if __name__ == "__main__":
    main()
