"""The trim population (issue: TIES / mag_masking over the references' checkpoint): with the
text side's zeros in the population, the kept fraction of the image weights is exactly what the
reference's ``topk_values_mask`` over the flattened checkpoint keeps."""

from __future__ import annotations

import pytest
import torch

from taskmerge.errors import ConfigError
from taskmerge.merging.build import build_method
from taskmerge.merging.population import image_fraction_kept
from taskmerge.merging.streaming import magnitude_threshold, trim_thresholds
from taskmerge.vectors.task_vector import TaskVector


def _vector(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.randn(40, 30, generator=g), "b.bias": torch.randn(77, generator=g)}


def _reference_mask(vector: dict[str, torch.Tensor], k: float, zeros: int) -> torch.Tensor:
    """tall_masks ``topk_values_mask`` over the image entries followed by ``zeros`` zeros."""
    flat = torch.cat([*(t.flatten() for t in vector.values()), torch.zeros(zeros)])
    d = flat.numel()
    kth = flat.abs().kthvalue(d - int(d * k / 100)).values
    return (flat.abs() >= kth)[: flat.numel() - zeros]


@pytest.mark.parametrize("zeros", [0, 1, 500, 1276, 5000])
@pytest.mark.parametrize("k", [5, 20, 50])
def test_threshold_with_text_side_zeros_equals_the_reference(zeros: int, k: float) -> None:
    vector = _vector()
    threshold = trim_thresholds(vector, k, extra_zeros=zeros)["a.weight"]
    ours = torch.cat([(t.abs() >= threshold).flatten() for t in vector.values()])
    assert torch.equal(ours, _reference_mask(vector, k, zeros))
    if zeros == 0:
        assert threshold == magnitude_threshold(list(vector.values()), k)


def test_ties_kept_fraction_follows_the_text_side_count(tiny_clip) -> None:  # noqa: ANN001
    text = sum(v.numel() for key, v in tiny_clip.model.state_dict().items()
               if key.split(".")[0] in ("token_embedding", "positional_embedding", "ln_final",
                                        "text_projection", "logit_scale"))  # fmt: skip
    assert tiny_clip.text_side_entries == text > 0
    vectors = {t: TaskVector(_vector(seed)) for seed, t in enumerate(("A", "B"))}
    image = sum(t.numel() for t in _vector().values())
    for population, zeros in (("image", 0), ("checkpoint", text)):
        ties = build_method("ties", {"k": 20, "trim_population": population})
        ties.set_text_side(text)
        ties.merge(vectors)
        kept = ties.details()["image_weights_kept"]
        assert kept == pytest.approx(min(int((image + zeros) * 0.2) / image, 1.0), abs=1e-6)
        assert ties.details()["trim_population"] == population


def test_checkpoint_population_needs_the_model() -> None:
    ties = build_method("ties", {"trim_population": "checkpoint"})
    with pytest.raises(ConfigError, match="needs the model's text side"):
        ties.merge({"A": TaskVector(_vector())})


@pytest.mark.slow
def test_vit_b32_and_l14_fractions_are_the_references() -> None:
    """25.83% / 22.54% of the image weights at k=20, 12.91% / 11.27% at mag_masking's k=10:
    the text side counted from each model's own config (vocab x width + context x width +
    ln_final + width x embed + logit_scale)."""
    open_clip = pytest.importorskip("open_clip")
    from taskmerge.models.clip import ClipBundle

    for name, at20, at10 in (("ViT-B-32", 25.83, 12.91), ("ViT-L-14", 22.54, 11.27)):
        model = open_clip.create_model(name)
        cfg = open_clip.get_model_config(name)
        width, embed = cfg["text_cfg"]["width"], cfg["embed_dim"]
        vocab, context = cfg["text_cfg"]["vocab_size"], cfg["text_cfg"]["context_length"]
        expected = vocab * width + context * width + 2 * width + width * embed + 1
        bundle = ClipBundle(model, None, None, name, "")  # type: ignore[arg-type]
        assert bundle.text_side_entries == expected
        image = sum(v.numel() for v in model.visual.state_dict().values())
        assert round(100 * image_fraction_kept(image, 20, expected), 2) == at20
        assert round(100 * image_fraction_kept(image, 10, expected), 2) == at10
        del model
