"""WUDI-merging (Cheng et al., "Whoever Started the Interference Should End It: Guiding Data-Free
Model Merging via Task Vectors", ICML 2025, arXiv:2503.08099): per linear layer, the merged
vector minimises the interference it causes on each task's own inputs, which the task vector's
rows stand in for (no data).

For each 2-D parameter (``m x n``), starting from ``tau = sum_t tau_t``, ``iter_num`` full-batch
Adam steps (lr 1e-5, betas (0.9, 0.999), eps 1e-8, no weight decay) on

    L(tau) = sum_t ||(tau - tau_t) tau_t^T||_F^2 / ||tau_t||_F^2.

Every other parameter (1-D, conv kernels) is the mean of the tau_t. Then theta0 + tau (no
coefficient).

Reference behaviour: FusionBench (``tanganke/fusion_bench``, ``fusion_bench/method/wudi/wudi.py``,
``wudi_merging``; defaults ``iter_num: 400`` in its YAML, ``exclude_keys: null``): the same loss,
initialisation, optimiser and settings, every 2-D tensor not in ``exclude_keys`` optimised.
Deviation, exact in real arithmetic: L is quadratic in tau, with gradient
``2 (tau G - C)``, ``G = sum_t tau_t^T tau_t / ||tau_t||^2`` (``n x n``) and
``C = sum_t tau_t tau_t^T tau_t / ||tau_t||^2`` (``m x n``). Both are accumulated once, streaming
over the tasks; the Adam steps then use that gradient (``torch.optim.Adam`` itself, the update
rule of the reference) instead of autograd through the ``T x m x m`` products of the stacked
task vectors. Memory and time per step no longer grow with T. G, C, tau and Adam's state are
float64 (reference: float32); the result is cast to the task vectors' dtype.

Determinism: there is no randomness (the start is the sum, the steps are full-batch), so a rerun
on the same device and thread count gives bit-identical weights; ``seed`` is still recorded
(``results.json``: ``report.wudi``) and seeds torch's generator around the optimisation, so that
an implementation change that introduced randomness would stay reproducible.

No coefficient is swept (as the reference); LiNeS composes (it scales the merged vector per
block, alpha from the norms, beta = 1, as for ``average``).

Memory: one parameter at a time, each task read once (the sum, G and C accumulate); the working
set is G, C, tau and Adam's two moments of one parameter, whatever T. ``device`` runs the
steps on an accelerator (``auto``: CUDA when present): 400 steps over ViT-B/32's matrices are
minutes on a CPU.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from taskmerge.errors import ConfigError
from taskmerge.hardware import check_device
from taskmerge.merging.base import MergeMethod
from taskmerge.merging.registry import register_method
from taskmerge.merging.tensorwise import (
    each_parameter_of,
    release_memory,
    running_sum,
    shape_of,
)
from taskmerge.vectors.task_vector import TaskVector

Vector = Mapping[str, torch.Tensor]
#: FusionBench's optimiser settings (``wudi_merging``).
LEARNING_RATE = 1e-5
DEFAULT_ITER_NUM = 400
DEFAULT_SEED = 0


def wudi_statistics(
    taus: Iterable[torch.Tensor], dtype: torch.dtype = torch.float64, device: str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(sum_t tau_t, G, C)`` of one ``m x n`` parameter, each task read once (see the module
    docstring). A zero task vector adds nothing to G and C (its loss term is 0/0 in the
    reference; here it is left out)."""
    total = gram = cross = None
    for tau in taus:
        work = tau.detach().to(device=device, dtype=dtype)
        square = float((work * work).sum())
        if total is None:
            total = work.clone()
            gram = work.new_zeros((work.shape[1], work.shape[1]))
            cross = work.new_zeros(work.shape)
        else:
            total.add_(work)
        if square > 0:
            product = work.mT @ work
            gram.add_(product, alpha=1.0 / square)
            cross.add_(work @ product, alpha=1.0 / square)
            del product
        del tau, work
    if total is None:
        raise ValueError("wudi_statistics of no tensors")
    return total, gram, cross


def wudi_loss(merged: torch.Tensor, taus: Sequence[torch.Tensor]) -> torch.Tensor:
    """``sum_t ||(tau - tau_t) tau_t^T||_F^2 / ||tau_t||_F^2`` (the loss as written)."""
    terms = [((merged - tau) @ tau.mT).square().sum() / tau.square().sum() for tau in taus]
    return torch.stack(terms).sum()


def wudi_matrix(
    taus: Iterable[torch.Tensor], iter_num: int = DEFAULT_ITER_NUM, device: str = "cpu"
) -> torch.Tensor:
    """WUDI of one 2-D parameter: ``iter_num`` Adam steps from the sum (in its input dtype).

    Args:
        taus: One ``m x n`` matrix per task, consumed once (a generator of lazy reads works).
        iter_num: Adam steps.
        device: Where the steps run.
    """
    first: list[torch.Tensor] = []

    def remember_first() -> Iterable[torch.Tensor]:
        for tau in taus:
            if not first:
                first.append(torch.empty(0, dtype=tau.dtype, device=tau.device))
            yield tau

    total, gram, cross = wudi_statistics(remember_first(), device=device)
    merged = torch.nn.Parameter(total)
    optimizer = torch.optim.Adam([merged], lr=LEARNING_RATE, weight_decay=0)
    with torch.no_grad():
        for _ in range(iter_num):
            merged.grad = (merged @ gram).sub_(cross).mul_(2.0)
            optimizer.step()
    out = merged.detach().to(device=first[0].device, dtype=first[0].dtype)
    del merged, optimizer, gram, cross, total
    release_memory()
    return out


def is_wudi_target(name: str, shape: torch.Size, exclude_keys: Sequence[str] = ()) -> bool:
    """Whether WUDI optimises this parameter: 2-D and not excluded (as the reference)."""
    return len(shape) == 2 and name not in exclude_keys


def wudi_merge(
    vectors: Sequence[Vector],
    iter_num: int = DEFAULT_ITER_NUM,
    exclude_keys: Sequence[str] = (),
    device: str = "cpu",
    seed: int = DEFAULT_SEED,
) -> dict[str, torch.Tensor]:
    """WUDI over whole task vectors (before any coefficient), one parameter at a time."""
    count = len(vectors)
    merged: dict[str, torch.Tensor] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in each_parameter_of(vectors):
            taus = (v[name] for v in vectors)
            if is_wudi_target(name, shape_of(vectors[0], name), exclude_keys):
                merged[name] = wudi_matrix(taus, iter_num, device)
            else:
                merged[name] = running_sum(taus).div_(count)
    return merged


def resolve_device(device: str) -> str:
    """``auto``: CUDA when present, else the CPU; any other name checked."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return check_device(device)


@register_method("wudi", scaled=False, lines="multitask")
class WUDIMerging(MergeMethod):
    """WUDI-merging (arXiv:2503.08099): per 2-D layer, Adam on the task vectors' interference.

    Args:
        iter_num: Adam steps per layer (FusionBench's YAML: 400).
        exclude_keys: Parameter names merged by the mean instead (default none).
        device: Where the steps run: ``auto`` (CUDA when present), ``cpu``, ``cuda[:i]``.
        seed: Recorded in ``results.json`` and seeding torch's generator around the steps
            (which draw nothing: WUDI is deterministic).
    """

    def __init__(
        self,
        iter_num: int = DEFAULT_ITER_NUM,
        exclude_keys: Sequence[str] | None = None,
        device: str = "auto",
        seed: int = DEFAULT_SEED,
    ) -> None:
        super().__init__(scaling_coef=1.0)
        if int(iter_num) < 0:
            raise ConfigError(f"method.iter_num={iter_num} must be >= 0 (FusionBench: 400)")
        self.iter_num, self.seed, self.device = int(iter_num), int(seed), device
        self.exclude_keys = [str(key) for key in exclude_keys or ()]

    def merge(self, task_vectors: Mapping[str, TaskVector]) -> TaskVector:  # noqa: D102
        vectors = [tv.vector for tv in task_vectors.values()]
        device = resolve_device(self.device)
        return TaskVector(wudi_merge(vectors, self.iter_num, self.exclude_keys, device, self.seed))

    def details(self) -> dict[str, Any]:
        """The seed, steps and learning rate of the optimisation."""
        return {
            "wudi": {
                "seed": self.seed,
                "iter_num": self.iter_num,
                "lr": LEARNING_RATE,
                "device": resolve_device(self.device),
            }
        }
