"""Importing published checkpoints: a fabricated tree of every source layout imports into the
store and merges exactly like the same weights saved natively; imports are idempotent and
atomic; published TALL masks feed tall_mask / consensus; code-running pickles are refused."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file as safe_load
from safetensors.torch import save_file

import taskmerge
from taskmerge.errors import CheckpointError
from taskmerge.finetune.modes import AttentionOnly, FinetuningMode, Linearized
from taskmerge.interop import hf_clip
from taskmerge.interop.importer import import_checkpoints
from taskmerge.io.digest import fingerprint
from taskmerge.merging.mask_methods import Consensus, TallMask
from taskmerge.store.checkpoints import CheckpointStore
from tests.helpers.reference_files import (
    RunsCode,
    TangentEncoder,
    TangentLinearized,
    encoder_state,
    fake_reference_package,
    reference_masks,
    tangent_params,
)

MODEL = "taskmerge-tiny"
TASKS = ["Digits", "Colors"]


@pytest.fixture
def tiny(tiny_clip):  # noqa: ANN001, ANN201
    """The project's tiny CLIP (open_clip ``CLIP`` with a ``VisionTransformer`` tower)."""
    return tiny_clip


def stores(root: Path, pretrained: dict) -> tuple[CheckpointStore, CheckpointStore]:
    fp = fingerprint(pretrained)
    return (
        CheckpointStore(root, MODEL, "shipped", FinetuningMode(), pretrained, fp),
        CheckpointStore(root, MODEL, "shipped", Linearized(), pretrained, fp),
    )


def tuned_clips(tiny) -> dict[str, torch.nn.Module]:  # noqa: ANN001
    """One fine-tuned copy of the whole CLIP per task (random moves of the image tower)."""
    out = {}
    for index, task in enumerate(TASKS):
        clip = copy.deepcopy(tiny.model)
        generator = torch.Generator().manual_seed(index + 1)
        with torch.no_grad():
            for param in clip.visual.parameters():
                param.add_(0.01 * torch.randn(param.shape, generator=generator))
        out[task] = clip
    return out


def native_merge(tmp_path: Path, pretrained: dict, clips: dict, method: str, **options):  # noqa: ANN003, ANN201
    """The same weights saved by taskmerge itself, merged from disk."""
    store, _ = stores(tmp_path / "native", pretrained)
    for task, clip in clips.items():
        store.save(task, clip.visual.state_dict(), overwrite=True)
    paths = {task: store.path(task) for task in clips}
    return taskmerge.merge(pretrained, paths, method, **options)


def assert_merges_like_native(tmp_path: Path, store: CheckpointStore, pretrained, clips) -> None:  # noqa: ANN001
    for method, options in (("sum", {"scaling_coef": 0.4}), ("ties", {"scaling_coef": 0.7})):
        imported = taskmerge.merge(pretrained, {t: store.path(t) for t in TASKS}, method, **options)
        native = native_merge(tmp_path, pretrained, clips, method, **options)
        for key, value in native.items():
            assert torch.equal(imported[key], value), (method, key)


def test_tall_masks_tree_imports_merges_and_feeds_the_mask_methods(tiny, tmp_path: Path) -> None:
    pretrained = tiny.model.visual.state_dict()
    clips = tuned_clips(tiny)
    source = tmp_path / "hub" / "single_task" / MODEL.upper()  # one release spells VIT-B-16
    for task, clip in clips.items():
        folder = source / f"{task}Val"
        folder.mkdir(parents=True)
        torch.save(encoder_state(clip), folder / "nonlinear_finetuned.pt")
    torch.save(encoder_state(tiny.model), source / "DigitsVal" / "nonlinear_zeroshot.pt")
    with fake_reference_package(tmp_path / "fake"):
        from src.models.modeling import ClassificationHead

        for task in TASKS:
            torch.save(ClassificationHead(True, torch.randn(3, 8)), source / f"head_{task}Val.pt")
    masks, packed = reference_masks(encoder_state(tiny.model), [f"{t}Val" for t in TASKS])
    mask_dir = tmp_path / "hub" / "tall_masks" / MODEL
    mask_dir.mkdir(parents=True)
    np.save(mask_dir / "TALL_mask_2task.npy", packed)

    store, linear = stores(tmp_path / "ckpt", pretrained)
    report = import_checkpoints(tmp_path / "hub", MODEL, store, linear)
    assert (
        report.imported == TASKS and report.heads == TASKS and report.masks == ["TALL_mask_2task"]
    )
    assert report.pretrained_difference == 0.0
    assert_merges_like_native(tmp_path, store, pretrained, clips)
    manifest = json.loads((store.root / MODEL / "standard" / "manifest.json").read_text())
    assert manifest["Digits"]["layout"] == "tall_masks" and len(manifest["Digits"]["sha256"]) == 64

    again = import_checkpoints(tmp_path / "hub", MODEL, store, linear)  # idempotent
    assert again.imported == [] and again.skipped == TASKS

    # the published masks: one candidate, task t evaluated with theta0 + m_t * tau_MTL
    tvs = store.task_vectors(TASKS)
    method = TallMask(load_mask=True).bind(None, TASKS, mask_dir=store.mask_dir)
    (candidate,) = list(method.candidates(pretrained, tvs))
    assert candidate.hyperparameters == {"tall_mask_lambda": "published"}
    tau_mtl = {k: sum(tv.vector[k] for tv in tvs.values()) for k in tvs["Digits"].vector}
    for task in TASKS:
        expected = masks[f"{task}Val"]
        state = dict(candidate.for_task(task))
        for key in ("conv1.weight", "transformer.resblocks.1.attn.in_proj_weight"):
            mask = expected[f"model.visual.{key}"]
            want = pretrained[key] + mask * tau_mtl[key]
            assert torch.allclose(state[key], want, atol=1e-7), (task, key)
    count = Consensus(prun_thre_k=2, load_mask=True).bind(None, TASKS, mask_dir=store.mask_dir)
    merged = count.merge(tvs).vector["conv1.weight"]
    both = (
        masks["DigitsVal"]["model.visual.conv1.weight"]
        & masks["ColorsVal"]["model.visual.conv1.weight"]
    )
    assert torch.allclose(merged, both * tau_mtl["conv1.weight"], atol=1e-7)


def test_task_vectors_tree_of_pickled_modules(tiny, tmp_path: Path) -> None:
    pretrained = tiny.model.visual.state_dict()
    clips = tuned_clips(tiny)
    source = tmp_path / "checkpoints" / MODEL
    with fake_reference_package(tmp_path / "fake"):
        from src.modeling import ImageEncoder

        for task, clip in clips.items():
            (source / f"{task}Val").mkdir(parents=True)
            torch.save(ImageEncoder(clip, tiny.preprocess), source / f"{task}Val" / "finetuned.pt")
        torch.save(ImageEncoder(copy.deepcopy(tiny.model), tiny.preprocess), source / "zeroshot.pt")
    store, linear = stores(tmp_path / "ckpt", pretrained)
    assert import_checkpoints(tmp_path, MODEL, store, linear).imported == TASKS
    assert_merges_like_native(tmp_path, store, pretrained, clips)


def test_tangent_linear_checkpoints_import_as_finetuning_linear(tiny, tmp_path: Path) -> None:
    pretrained = tiny.model.visual.state_dict()
    encoder = torch.nn.Module()
    encoder.model = copy.deepcopy(tiny.model)
    del encoder.model.transformer
    params0 = tangent_params(encoder)
    names = [n for n, _ in encoder.named_parameters()]
    source = tmp_path / "checkpoints" / MODEL
    thetas = {}
    for index, task in enumerate(TASKS):
        generator = torch.Generator().manual_seed(index)
        params = [p + 0.01 * torch.randn(p.shape, generator=generator) for p in params0]
        (source / f"{task}Val").mkdir(parents=True)
        linear_state = TangentEncoder(TangentLinearized(params, params0)).state_dict()
        torch.save(linear_state, source / f"{task}Val" / "linear_finetuned.pt")
        theta = dict(zip(names, params, strict=True))
        thetas[task] = {k: theta[f"model.visual.{k}"] for k in pretrained}
    store, linear = stores(tmp_path / "ckpt", pretrained)
    report = import_checkpoints(tmp_path, MODEL, store, linear)
    assert report.imported == TASKS
    assert linear.missing(TASKS) == [] and store.missing(TASKS) == TASKS
    for task in TASKS:
        state = linear.load(task)
        assert all(torch.equal(state[k], v) for k, v in thetas[task].items())
        assert linear.task_vector(task).mode == "linear"


def test_linear_2_checkpoints_import_as_finetuning_attention(tiny, tmp_path: Path) -> None:
    """kyrie-23/linear_task_arithmetic's ``--finetuning-mode=linear-2`` writes
    ``<Task>Val/linear-2_{finetuned,zeroshot}.pt``: ``ReluEncoder.save``, a dict of the wrapped
    ImageEncoder's tensors (``image_encoder.model.visual.*``) plus ``model_name``."""
    pretrained = tiny.model.visual.state_dict()

    def relu_encoder_file(clip: torch.nn.Module) -> dict:
        return {**{f"image_encoder.{k}": v for k, v in encoder_state(clip).items()},
                "model_name": MODEL}  # fmt: skip

    clips = {}
    for index, task in enumerate(TASKS):  # only the attention projections move
        clip = copy.deepcopy(tiny.model)
        generator = torch.Generator().manual_seed(index + 1)
        with torch.no_grad():
            for name, param in clip.visual.named_parameters():
                if name.endswith(("attn.in_proj_weight", "attn.out_proj.weight")):
                    param.add_(0.01 * torch.randn(param.shape, generator=generator))
        clips[task] = clip
    source = tmp_path / "checkpoints" / MODEL
    for task, clip in clips.items():
        (source / f"{task}Val").mkdir(parents=True)
        torch.save(relu_encoder_file(clip), source / f"{task}Val" / "linear-2_finetuned.pt")
        torch.save(relu_encoder_file(tiny.model), source / f"{task}Val" / "linear-2_zeroshot.pt")
    store, linear = stores(tmp_path / "ckpt", pretrained)
    attention = CheckpointStore(tmp_path / "ckpt", MODEL, "shipped", AttentionOnly(), pretrained,
                                fingerprint(pretrained))  # fmt: skip
    report = import_checkpoints(tmp_path, MODEL, store, linear, attention_store=attention)
    assert report.imported == TASKS and report.pretrained_difference == 0.0
    assert attention.layout.mode_dir == tmp_path / "ckpt" / MODEL / "attention"
    assert store.missing(TASKS) == TASKS and linear.missing(TASKS) == TASKS
    for task, clip in clips.items():
        state = attention.load(task)
        assert set(state) == set(pretrained)
        assert all(torch.equal(state[k], v) for k, v in clip.visual.state_dict().items())
        moved = {k for k in pretrained if not torch.equal(state[k], pretrained[k])}
        assert moved and all(k.endswith(("in_proj_weight", "out_proj.weight")) for k in moved)


def _open_clip_to_hf(visual: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open_clip ``visual`` keys -> transformers ``CLIPVisionModel`` keys (the inverse mapping)."""
    out = {
        "vision_model.embeddings.class_embedding": visual["class_embedding"],
        "vision_model.embeddings.position_embedding.weight": visual["positional_embedding"],
        "vision_model.embeddings.patch_embedding.weight": visual["conv1.weight"],
        "vision_model.pre_layrnorm.weight": visual["ln_pre.weight"],
        "vision_model.pre_layrnorm.bias": visual["ln_pre.bias"],
        "vision_model.post_layernorm.weight": visual["ln_post.weight"],
        "vision_model.post_layernorm.bias": visual["ln_post.bias"],
    }
    layers = {int(k.split(".")[2]) for k in visual if k.startswith("transformer.resblocks.")}
    for i in layers:
        ours, theirs = f"transformer.resblocks.{i}.", f"vision_model.encoder.layers.{i}."
        for kind in ("weight", "bias"):
            q, k, v = visual[f"{ours}attn.in_proj_{kind}"].chunk(3)
            for name, part in zip(("q_proj", "k_proj", "v_proj"), (q, k, v), strict=True):
                out[f"{theirs}self_attn.{name}.{kind}"] = part.clone()
            out[f"{theirs}self_attn.out_proj.{kind}"] = visual[f"{ours}attn.out_proj.{kind}"]
            out[f"{theirs}layer_norm1.{kind}"] = visual[f"{ours}ln_1.{kind}"]
            out[f"{theirs}layer_norm2.{kind}"] = visual[f"{ours}ln_2.{kind}"]
            out[f"{theirs}mlp.fc1.{kind}"] = visual[f"{ours}mlp.c_fc.{kind}"]
            out[f"{theirs}mlp.fc2.{kind}"] = visual[f"{ours}mlp.c_proj.{kind}"]
    return {k: v.contiguous() for k, v in out.items()}


def test_fusion_bench_models_convert_and_take_the_base_projection(
    tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pretrained = tiny.model.visual.state_dict()
    clips = tuned_clips(tiny)
    monkeypatch.setitem(hf_clip.FUSION_BENCH_MODELS, MODEL, "clip-vit-tiny")
    from taskmerge.interop import checkpoint_layouts as layouts

    monkeypatch.setattr(
        layouts, "_FUSION_DIR",
        layouts.re.compile(rf"({'|'.join(hf_clip.FUSION_BENCH_MODELS.values())})_[\w.-]+$"),
    )  # fmt: skip
    for task, name in (("Digits", "mnist"), ("Colors", "cifar10")):
        monkeypatch.setitem(hf_clip.FUSION_BENCH_TASKS, name, task)
        folder = tmp_path / "tanganke" / f"clip-vit-tiny_{name}"
        folder.mkdir(parents=True)
        save_file(_open_clip_to_hf(clips[task].visual.state_dict()), folder / "model.safetensors")
        (folder / "config.json").write_text(json.dumps({"hidden_act": "quick_gelu"}))
    store, linear = stores(tmp_path / "ckpt", pretrained)
    report = import_checkpoints(tmp_path / "tanganke", MODEL, store, linear, tasks=TASKS)
    assert report.imported == TASKS
    for task in TASKS:  # the frozen projection is the base model's
        assert torch.equal(store.load(task)["proj"], pretrained["proj"])
    for clip in clips.values():
        with torch.no_grad():
            clip.visual.proj.copy_(pretrained["proj"])
    assert_merges_like_native(tmp_path, store, pretrained, clips)


def test_plain_state_dict_files(tiny, tmp_path: Path) -> None:
    pretrained = tiny.model.visual.state_dict()
    clips = tuned_clips(tiny)
    (tmp_path / "src").mkdir()
    for task, clip in clips.items():  # open_clip CLIP keys: the visual. prefix is dropped
        state = {f"visual.{k}": v for k, v in clip.visual.state_dict().items()}
        save_file(state, tmp_path / "src" / f"{task}.safetensors")
    store, linear = stores(tmp_path / "ckpt", pretrained)
    assert import_checkpoints(tmp_path / "src", MODEL, store, linear).imported == TASKS
    assert_merges_like_native(tmp_path, store, pretrained, clips)


def test_refusals_write_nothing(tiny, tmp_path: Path) -> None:
    pretrained = tiny.model.visual.state_dict()
    store, linear = stores(tmp_path / "ckpt", pretrained)
    source = tmp_path / "hub" / "single_task" / MODEL / "DigitsVal"
    source.mkdir(parents=True)
    marker = tmp_path / "pwned"
    payload = RunsCode(os.system, f"touch {marker}")
    torch.save({**encoder_state(tiny.model), "x": payload}, source / "nonlinear_finetuned.pt")
    with pytest.raises(CheckpointError, match="system"):
        import_checkpoints(tmp_path / "hub", MODEL, store, linear)
    assert not marker.exists() and store.missing(["Digits"]) == ["Digits"]
    # fine-tuned from other weights: the shipped zero-shot differs from the configured model
    other = copy.deepcopy(tiny.model)
    with torch.no_grad():
        other.visual.conv1.weight.add_(1.0)
    torch.save(encoder_state(other), source / "nonlinear_finetuned.pt")
    torch.save(encoder_state(other), source / "nonlinear_zeroshot.pt")
    with pytest.raises(CheckpointError, match="fine-tuned from other weights"):
        import_checkpoints(tmp_path / "hub", MODEL, store, linear)
    assert store.missing(["Digits"]) == ["Digits"]
    with pytest.raises(CheckpointError, match="no taskmerge-tiny checkpoint for \\['Shapes'\\]"):
        import_checkpoints(tmp_path / "hub", MODEL, store, linear, tasks=["Shapes"])


IMPORT_CHILD = r"""
import sys
from taskmerge.io.digest import fingerprint
from taskmerge.finetune.modes import AttentionOnly, FinetuningMode, Linearized
from taskmerge.interop.importer import import_checkpoints
from taskmerge.models.tiny import load_tiny_clip
from taskmerge.store.checkpoints import CheckpointStore

source, target, cache = sys.argv[1:4]
bundle = load_tiny_clip(cache)
pretrained = bundle.visual.state_dict()
fp = fingerprint(pretrained)
store = CheckpointStore(target, bundle.name, "shipped", FinetuningMode(), pretrained, fp)
linear = CheckpointStore(target, bundle.name, "shipped", Linearized(), pretrained, fp)
report = import_checkpoints(source, bundle.name, store, linear)
print("imported", report.imported, "skipped", report.skipped)
"""


@pytest.mark.slow
def test_an_import_killed_midway_leaves_no_half_task_and_resumes(tiny, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    tasks = ["Digits", "Shapes", "Colors", "Textures", "Counting", "Arrows"]
    source = tmp_path / "hub" / "single_task" / MODEL
    for index, task in enumerate(tasks):
        clip = copy.deepcopy(tiny.model)
        with torch.no_grad():
            clip.visual.conv1.weight.add_(float(index))
        (source / f"{task}Val").mkdir(parents=True)
        torch.save(encoder_state(clip), source / f"{task}Val" / "nonlinear_finetuned.pt")
    manifest = tmp_path / "ckpt" / MODEL / "standard" / "manifest.json"
    args = [sys.executable, "-c", IMPORT_CHILD, str(tmp_path / "hub"), str(tmp_path / "ckpt"),
            str(tmp_path / "cache")]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while proc.poll() is None:
        if manifest.is_file() and 1 <= len(json.loads(manifest.read_text())) < len(tasks):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the import finished before it could be killed")
    done = json.loads(manifest.read_text())
    for task in tasks:  # every checkpoint present is complete (moved into place atomically)
        path = tmp_path / "ckpt" / MODEL / "standard" / task / "finetuned.safetensors"
        if path.exists():
            assert torch.equal(
                safe_load(path)["conv1.weight"],
                tiny.model.visual.conv1.weight + tasks.index(task),
            )
    rerun = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"skipped {sorted(done, key=tasks.index)}" in rerun.stdout
    assert len(json.loads(manifest.read_text())) == len(tasks)


def test_hub_offline_names_repository_and_command_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unreachable hub: only the local cache is read (no download retries), and the message
    names the repository, the files and the download command."""
    import huggingface_hub

    from taskmerge.interop import hub

    calls = []

    def snapshot_download(repo, allow_patterns=None, local_files_only=False):  # noqa: ANN001, ANN202
        calls.append((repo, local_files_only))
        raise FileNotFoundError("not in the cache")

    monkeypatch.setattr(hub, "hub_reachable", lambda: False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    with pytest.raises(CheckpointError) as caught:
        hub.fetch("hf://nik-dim/tall_masks", "ViT-B-32", [])
    assert calls == [("nik-dim/tall_masks", True)]
    message = str(caught.value)
    expected = [
        "hf://nik-dim/tall_masks",
        "huggingface-cli download nik-dim/tall_masks",
        "--include 'single_task/ViT-B-32/*'",
        "cannot be reached",
        "source=DIR",
    ]
    for words in expected:
        assert words in message, (words, message)
