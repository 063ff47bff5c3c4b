"""Readers of the reference repos' checkpoints, on files fabricated here (offline).

Legacy pickles are written with fake ``src.modeling`` / ``src.models.modeling`` packages (the
reference class paths) that are removed again before reading, so reading cannot import them.
"""

from __future__ import annotations

import builtins
import copy
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from taskmerge.errors import CheckpointError
from taskmerge.interop.checkpoint_layouts import (
    detect_layout,
    find_heads,
    find_model_dir,
    find_tall_mask_files,
    find_zeroshot,
    fusion_bench_dirs,
    task_folders,
    task_name,
)
from taskmerge.interop.hf_clip import (
    FUSION_BENCH_TASKS,
    convert_clip_vision,
    fusion_bench_repo,
    fusion_bench_task,
    parse_fusion_bench_repo,
)
from taskmerge.interop.published_masks import read_tall_mask_file
from taskmerge.interop.readers import (
    read_head,
    read_linear_checkpoint,
    read_state_dict,
    read_tall_masks_checkpoint,
    read_task_vectors_checkpoint,
)
from taskmerge.io.safe_pickle import load_legacy, module_state_dict
from tests.helpers.reference_files import (
    RunsCode,
    TangentEncoder,
    TangentLinearized,
    assert_same,
    encoder_state,
    fake_reference_package,
    reference_masks,
    tangent_params,
)


@pytest.fixture
def tiny(tiny_clip):  # noqa: ANN001, ANN201
    """The project's tiny CLIP (open_clip ``CLIP`` with a ``VisionTransformer`` tower)."""
    return tiny_clip


# --- pickled modules -------------------------------------------------------------------------


def test_pickled_image_encoder_reads_back_exactly(tiny, tmp_path: Path) -> None:
    path = tmp_path / "ViT-tiny" / "MNISTVal" / "finetuned.pt"
    path.parent.mkdir(parents=True)
    with fake_reference_package(tmp_path / "fake"):
        from src.modeling import ImageEncoder

        encoder = ImageEncoder(copy.deepcopy(tiny.model), tiny.preprocess)
        torch.save(encoder, path)
        saved = {k: v.clone() for k, v in encoder.state_dict().items()}
    needed = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    assert "src.modeling.ImageEncoder" in needed
    assert "open_clip.transformer.VisionTransformer" in needed
    assert "src.modeling" not in sys.modules

    tree = load_legacy(path)
    assert tree.legacy_name == "src.modeling.ImageEncoder"
    assert_same(module_state_dict(tree), saved)  # non-persistent attn_mask left out, as saved
    visual = read_task_vectors_checkpoint(path)
    assert_same(visual, tiny.model.visual.state_dict())
    assert "src.modeling" not in sys.modules  # nothing was imported to read it
    fresh = copy.deepcopy(tiny.model.visual)
    fresh.load_state_dict(visual, strict=True)


@pytest.mark.parametrize("module", ["src.modeling", "src.models.modeling"])
def test_pickled_heads(tmp_path: Path, module: str) -> None:
    weight, bias = torch.randn(5, 8), torch.randn(5)
    with fake_reference_package(tmp_path / "fake"):
        head_cls = __import__(module, fromlist=["ClassificationHead"]).ClassificationHead
        torch.save(head_cls(True, weight, bias), tmp_path / "head_MNISTVal.pt")
        torch.save(head_cls(False, weight), tmp_path / "head_raw.pt")
    got_weight, got_bias = read_head(tmp_path / "head_MNISTVal.pt")
    assert torch.equal(got_weight, weight) and torch.equal(got_bias, bias)
    with pytest.raises(CheckpointError, match="normalize=False"):
        read_head(tmp_path / "head_raw.pt")


@pytest.mark.parametrize("kind", ["os.system", "builtins.exec", "builtins.eval"])
def test_code_running_pickle_is_refused_before_loading(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "pwned"
    payload = {
        "os.system": RunsCode(os.system, f"touch {marker}"),
        "builtins.exec": RunsCode(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
        "builtins.eval": RunsCode(builtins.eval, f"open({str(marker)!r}, 'w').close()"),
    }[kind]
    path = tmp_path / "nonlinear_finetuned.pt"
    torch.save({"model.visual.conv1.weight": torch.zeros(1), "extra": payload}, path)
    global_name = f"{payload.func.__module__}.{payload.func.__name__}"  # posix.system on Linux
    for reader in (read_tall_masks_checkpoint, read_head, load_legacy):
        with pytest.raises(CheckpointError) as info:
            reader(path)
        message = str(info.value)
        assert global_name in message and str(path) in message and "\n" not in message
    assert not marker.exists()


def test_bare_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "old.pt"
    path.write_bytes(pickle.dumps({"w": 1}))
    with pytest.raises(CheckpointError, match="not a torch.save zip archive"):
        load_legacy(path)


# --- tall_masks / LiNeS / TSV ------------------------------------------------------------------


def test_tall_masks_checkpoint_drops_text_keys(tiny, tmp_path: Path) -> None:
    state = encoder_state(tiny.model)
    assert any(not k.startswith("model.visual.") for k in state)  # text leftovers present
    torch.save({**state, "model_name": "ViT-tiny"}, tmp_path / "nonlinear_finetuned.pt")
    visual = read_tall_masks_checkpoint(tmp_path / "nonlinear_finetuned.pt")
    assert_same(visual, tiny.model.visual.state_dict())


def test_plain_state_dicts_with_any_prefix(tiny, tmp_path: Path) -> None:
    visual = tiny.model.visual.state_dict()
    save_file(
        {f"visual.{k}": v.contiguous() for k, v in visual.items()}, tmp_path / "a.safetensors"
    )
    torch.save({"state_dict": visual}, tmp_path / "b.pt")
    torch.save(tiny.model.state_dict(), tmp_path / "c.pt")
    for name in ("a.safetensors", "b.pt", "c.pt"):
        assert_same(read_state_dict(tmp_path / name), visual)
    torch.save({"token_embedding.weight": torch.zeros(2)}, tmp_path / "text.pt")
    with pytest.raises(CheckpointError, match="no open_clip image tower"):
        read_state_dict(tmp_path / "text.pt")


@pytest.mark.parametrize("writer", ["np.save", "torch.save"])
def test_tall_mask_file_round_trip(tiny, tmp_path: Path, writer: str) -> None:
    state = encoder_state(tiny.model)
    zeroshot = tmp_path / "nonlinear_zeroshot.pt"
    torch.save(state, zeroshot)
    tasks = ["Cars", "DTD", "MNIST"]
    masks, packed = reference_masks(state, tasks)
    path = tmp_path / "TALL_mask_3task.npy"
    if writer == "np.save":  # LiNeS: a pickled dict inside a real .npy
        np.save(path, packed)
    else:  # tall_masks: torch.load(...) under the same name
        torch.save(packed, path)
    expected = {
        task: {k[len("model.visual.") :]: m for k, m in masks[task].items() if "visual." in k}
        for task in tasks
    }
    for reference in (zeroshot, state, tiny.model.state_dict()):
        got = read_tall_mask_file(path, reference)
        assert list(got) == tasks
        for task in tasks:
            assert list(got[task]) == sorted(expected[task])
            for key, mask in expected[task].items():
                assert got[task][key].dtype == torch.bool and torch.equal(got[task][key], mask)
    assert list(read_tall_mask_file(path, zeroshot, tasks=["MNISTVal"])) == ["MNIST"]
    tower_only = {k: v for k, v in state.items() if k.startswith("model.visual.")}
    tower_masks, tower_packed = reference_masks(tower_only, ["SVHN"], seed=1)
    torch.save(tower_packed, tmp_path / "tower.npy")  # masks built on a visual-only checkpoint
    got = read_tall_mask_file(tmp_path / "tower.npy", tiny.model.state_dict())["SVHN"]
    for key, mask in tower_masks["SVHN"].items():
        assert torch.equal(got[key[len("model.visual.") :]], mask)
    with pytest.raises(CheckpointError, match="bits"):
        read_tall_mask_file(path, tiny.model.visual.state_dict())
    with pytest.raises(CheckpointError, match="no mask for"):
        read_tall_mask_file(path, zeroshot, tasks=["SVHN"])


def test_npy_payload_that_runs_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "TALL_mask_8task.npy"
    np.save(path, {"MNIST": RunsCode(os.system, f"touch {marker}")}, allow_pickle=True)
    with pytest.raises(CheckpointError, match="system"):
        read_tall_mask_file(path, {"model.visual.conv1.weight": (8,)})
    assert not marker.exists()


# --- tangent linearized checkpoints ------------------------------------------------------------


def test_linear_checkpoint_recovers_theta_and_theta0(tiny, tmp_path: Path) -> None:
    encoder = nn.Module()
    encoder.model = copy.deepcopy(tiny.model)
    del encoder.model.transformer  # what ImageEncoder(keep_lang=False) does
    params0 = tangent_params(encoder)
    generator = torch.Generator().manual_seed(1)
    params = [p + 0.01 * torch.randn(p.shape, generator=generator) for p in params0]
    linear = TangentEncoder(TangentLinearized(params, params0))
    state = linear.state_dict()
    state["model_name"] = "ViT-tiny"
    torch.save(state, tmp_path / "linear_finetuned.pt")
    assert "model.params.0" in state and "model.params0.0" in state

    reference = tiny.model.visual.state_dict()
    shuffled = {k: tuple(reference[k].shape) for k in sorted(reference)}  # e.g. from safetensors
    assert read_linear_checkpoint(tmp_path / "linear_finetuned.pt", shuffled).params.keys() == (
        reference.keys()
    )
    got = read_linear_checkpoint(tmp_path / "linear_finetuned.pt", reference)
    assert got.model_name == "ViT-tiny"
    assert_same(got.params0, reference)
    names = [n for n, _ in encoder.named_parameters()]
    theta = dict(zip(names, params, strict=True))
    assert_same(got.params, {k: theta[f"model.visual.{k}"] for k in reference})

    shapes = {k: tuple(v.shape) for k, v in reference.items() if "resblocks.3." not in k}
    shapes["ln_post.weight"] = (7,)
    with pytest.raises(CheckpointError, match="matches the"):
        read_linear_checkpoint(tmp_path / "linear_finetuned.pt", shapes)


# --- FusionBench / Hugging Face CLIP -----------------------------------------------------------


def test_hf_clip_vision_conversion_matches_features(tmp_path: Path, one_thread: None) -> None:
    transformers = pytest.importorskip("transformers")
    from open_clip.transformer import QuickGELU, VisionTransformer

    config = transformers.CLIPVisionConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        intermediate_size=128,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        projection_dim=16,
    )
    torch.manual_seed(0)
    hf = transformers.CLIPVisionModelWithProjection(config).eval()
    with torch.no_grad():  # non-trivial layer norms and biases everywhere
        for param in hf.parameters():
            param.add_(0.05 * torch.randn_like(param))
    state = hf.state_dict()
    folder = tmp_path / "tanganke" / "clip-vit-base-patch32_mnist"
    folder.mkdir(parents=True)
    vision = {k: v.contiguous() for k, v in state.items() if k.startswith("vision_model.")}
    old_buffer = {"vision_model.embeddings.position_ids": torch.arange(17)[None]}  # transformers 4
    save_file({**vision, **old_buffer}, str(folder / "model.safetensors"))  # FusionBench: no proj
    config.to_json_file(str(folder / "config.json"))
    projection = state["visual_projection.weight"].T.contiguous()

    converted = convert_clip_vision(folder, projection=projection)
    tower = VisionTransformer(
        image_size=32,
        patch_size=8,
        width=64,
        layers=2,
        heads=4,
        mlp_ratio=2.0,
        output_dim=16,
        act_layer=QuickGELU,
    ).eval()
    assert list(converted) == list(tower.state_dict())
    tower.load_state_dict(converted, strict=True)
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = hf(pixel_values=images).image_embeds
        actual = tower(images)
    assert (actual - expected).abs().max().item() < 1e-5

    from_memory = convert_clip_vision(state)  # CLIPVisionModelWithProjection keys, proj inside
    assert torch.equal(from_memory["proj"], projection)
    unprefixed = {k.removeprefix("vision_model."): v for k, v in vision.items()}  # transformers 5
    assert "proj" not in convert_clip_vision(unprefixed)

    data = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**data, "hidden_act": "gelu"}))
    with pytest.raises(CheckpointError, match="QuickGELU"):
        convert_clip_vision(folder)
    with pytest.raises(CheckpointError, match="unexpected key"):
        convert_clip_vision({**state, "vision_model.extra.weight": torch.zeros(1)})


def test_fusion_bench_names() -> None:
    from taskmerge.data.spec import STANDARD_TASKS

    assert set(FUSION_BENCH_TASKS.values()) == set(STANDARD_TASKS) - {"EMNIST"}
    assert fusion_bench_task("stanford-cars") == "Cars"
    assert fusion_bench_task("oxford_flowers102") == "Flowers102"
    with pytest.raises(CheckpointError, match="26-class"):
        fusion_bench_task("emnist_letters")
    with pytest.raises(CheckpointError, match="unknown FusionBench task"):
        fusion_bench_task("imagenet")
    assert fusion_bench_repo("ViT-B-32", "Cars") == "tanganke/clip-vit-base-patch32_stanford-cars"
    assert fusion_bench_repo("ViT-L-14", "rendered-sst2").endswith("large-patch14_rendered-sst2")
    with pytest.raises(CheckpointError, match="26-class"):
        fusion_bench_repo("ViT-B-16", "emnist_letters")
    with pytest.raises(CheckpointError):
        fusion_bench_repo("ViT-B-16", "EMNIST")
    for name in (
        "tanganke/clip-vit-base-patch16_oxford-iiit-pet",
        "clip-vit-base-patch16_oxford-iiit-pet",
        "models--tanganke--clip-vit-base-patch16_oxford-iiit-pet",
    ):
        assert parse_fusion_bench_repo(name) == ("ViT-B-16", "OxfordIIITPet")


# --- layouts -----------------------------------------------------------------------------------


def _touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")


def test_detect_layouts_and_discover_tasks(tmp_path: Path) -> None:
    tall = tmp_path / "tall"
    _touch(
        tall,
        "single_task/VIT-B-16/MNISTVal/nonlinear_finetuned.pt",
        "single_task/VIT-B-16/MNISTVal/nonlinear_zeroshot.pt",
        "single_task/VIT-B-16/CarsVal/nonlinear_finetuned.pt",
        "single_task/VIT-B-16/head_MNISTVal.pt",
        "single_task/VIT-B-16/head_CarsVal.pt",
        "tall_masks/VIT-B-16/TALL_mask_8task.npy",
    )
    assert detect_layout(tall) == "tall_masks"
    model_dir = find_model_dir(tall, "ViT-B-16")
    assert model_dir == tall / "single_task" / "VIT-B-16"
    assert list(task_folders(model_dir)) == ["Cars", "MNIST"]
    assert find_zeroshot(model_dir, "tall_masks") == model_dir / "MNISTVal/nonlinear_zeroshot.pt"
    assert list(find_heads(model_dir)) == ["Cars", "MNIST"]
    assert list(find_tall_mask_files(tall, "ViT-B-16")) == ["TALL_mask_8task"]
    with pytest.raises(CheckpointError, match="no folder for ViT-L-14"):
        find_model_dir(tall, "ViT-L-14")

    tangent = tmp_path / "tangent"
    _touch(
        tangent,
        "checkpoints/ViT-B-32/MNISTVal/linear_finetuned.pt",
        "checkpoints/ViT-B-32/MNISTVal/linear_zeroshot.pt",
        "checkpoints/ViT-B-32/MNISTVal/finetuned.pt",
    )
    assert detect_layout(tangent) == "tangent"
    model_dir = find_model_dir(tangent, "ViT-B-32")
    assert find_zeroshot(model_dir, "tangent", linear=True).name == "linear_zeroshot.pt"

    vectors = tmp_path / "task_vectors"
    _touch(vectors, "ViT-B-32/zeroshot.pt", "ViT-B-32/MNIST/finetuned.pt")
    assert detect_layout(vectors) == "task_vectors"
    model_dir = find_model_dir(vectors, "ViT-B-32")
    assert find_zeroshot(model_dir, "task_vectors") == model_dir / "zeroshot.pt"
    assert list(task_folders(model_dir)) == ["MNIST"]

    fusion = tmp_path / "fusion"
    _touch(
        fusion,
        "tanganke/clip-vit-base-patch32_mnist/config.json",
        "tanganke/clip-vit-base-patch32_mnist/model.safetensors",
        "tanganke/clip-vit-base-patch32_emnist_letters/config.json",
        "tanganke/clip-vit-base-patch32_emnist_letters/model.safetensors",
        "hub/models--tanganke--clip-vit-base-patch16_svhn/snapshots/abc/config.json",
        "hub/models--tanganke--clip-vit-base-patch16_svhn/snapshots/abc/model.safetensors",
    )
    assert detect_layout(fusion) == "fusion_bench"
    assert fusion_bench_dirs(fusion, "ViT-B-32") == {
        "MNIST": fusion / "tanganke/clip-vit-base-patch32_mnist"
    }
    assert list(fusion_bench_dirs(fusion, "ViT-B-16")) == ["SVHN"]

    plain = tmp_path / "plain"
    _touch(plain, "ViT-B-32/model.safetensors")
    assert detect_layout(plain) == "open_clip"
    assert detect_layout(plain / "ViT-B-32/model.safetensors") == "open_clip"
    assert detect_layout(tangent / "checkpoints/ViT-B-32/MNISTVal/linear_zeroshot.pt") == "tangent"
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no known checkpoint layout"):
        detect_layout(tmp_path / "empty")
    assert [task_name(n) for n in ("MNISTVal", "Cars", "Val")] == ["MNIST", "Cars", "Val"]


# --- memory ------------------------------------------------------------------------------------

_WRITE = """
import sys, torch
blocks = {f"model.visual.transformer.resblocks.{i}.mlp.c_fc.weight": torch.randn(2560, 2560)
          for i in range(12)}
state = {"model.visual.conv1.weight": torch.randn(8, 3, 4, 4),
         "model.visual.class_embedding": torch.randn(8),
         "model.visual.positional_embedding": torch.randn(5, 8),
         "model.token_embedding.weight": torch.randn(100, 8), **blocks}
torch.save(state, sys.argv[1])
"""
_READ = """
import json, re, sys
from taskmerge.interop.readers import read_tall_masks_checkpoint

def memory():  # MiB: peak resident, resident, anonymous (heap) and file-backed (mmap) parts
    status = open("/proc/self/status").read()
    keys = ("VmHWM", "VmRSS", "RssAnon", "RssFile")
    return {k: int(re.search(k + r":\\s+(\\d+)", status).group(1)) / 1024 for k in keys}

before = memory()
state = read_tall_masks_checkpoint(sys.argv[1])
total = sum(float(t.sum()) for t in state.values())  # touches every byte
print(json.dumps({"before": before, "after": memory(), "tensors": len(state)}))
"""


def test_reading_keeps_at_most_one_copy(tmp_path: Path) -> None:
    if not Path("/proc/self/status").is_file():
        pytest.skip("needs Linux /proc to measure memory")
    path = tmp_path / "nonlinear_finetuned.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", _WRITE, str(path)], check=True, env=env)
    size = path.stat().st_size / 2**20
    command = [sys.executable, "-c", _READ, str(path)]
    result = subprocess.run(command, check=True, env=env, capture_output=True, text=True)
    numbers = json.loads(result.stdout.strip().splitlines()[-1])
    grown = {k: numbers["after"][k] - numbers["before"][k] for k in numbers["before"]}
    print(
        f"file {size:.0f} MiB; reading it grew "
        + ", ".join(f"{k} {v:+.0f}" for k, v in grown.items())
    )
    assert numbers["tensors"] == 15
    assert grown["VmHWM"] < 1.25 * size  # at most about one copy at the peak
    assert grown["RssAnon"] < 0.1 * size  # and that copy is the mapped file, not the heap
