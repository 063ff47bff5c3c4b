"""Readers of the checkpoints the reference repos wrote, returning open_clip ``visual`` state dicts.

Nothing here unpickles code: legacy ``.pt`` files go through torch's weights-only loader with
inert stand-ins for known module classes (:mod:`.safe_pickle`); TALL mask ``.npy`` payloads through
an unpickler that can only rebuild numpy arrays (:mod:`.tall_masks`).
"""

from taskmerge.legacy.hf_clip import (
    FUSION_BENCH_MODELS,
    FUSION_BENCH_REFUSED,
    FUSION_BENCH_TASKS,
    convert_clip_vision,
    fusion_bench_repo,
    fusion_bench_task,
    parse_fusion_bench_repo,
    read_hf_config,
)
from taskmerge.legacy.keys import to_visual
from taskmerge.legacy.layouts import (
    LAYOUTS,
    detect_layout,
    find_heads,
    find_model_dir,
    find_tall_mask_files,
    find_zeroshot,
    finetuned_file,
    fusion_bench_dirs,
    task_folders,
    task_name,
)
from taskmerge.legacy.readers import (
    LinearCheckpoint,
    read_head,
    read_linear_checkpoint,
    read_raw,
    read_state_dict,
    read_tall_masks_checkpoint,
    read_task_vectors_checkpoint,
)
from taskmerge.legacy.safe_pickle import StandIn, load_legacy, module_state_dict
from taskmerge.legacy.tall_masks import (
    iter_tall_masks,
    mask_layouts,
    read_packed_masks,
    read_tall_mask_file,
)

__all__ = [
    "FUSION_BENCH_MODELS",
    "FUSION_BENCH_REFUSED",
    "FUSION_BENCH_TASKS",
    "LAYOUTS",
    "LinearCheckpoint",
    "StandIn",
    "convert_clip_vision",
    "detect_layout",
    "find_heads",
    "find_model_dir",
    "find_tall_mask_files",
    "find_zeroshot",
    "finetuned_file",
    "fusion_bench_dirs",
    "fusion_bench_repo",
    "fusion_bench_task",
    "iter_tall_masks",
    "load_legacy",
    "mask_layouts",
    "module_state_dict",
    "parse_fusion_bench_repo",
    "read_head",
    "read_hf_config",
    "read_linear_checkpoint",
    "read_packed_masks",
    "read_raw",
    "read_state_dict",
    "read_tall_mask_file",
    "read_tall_masks_checkpoint",
    "read_task_vectors_checkpoint",
    "task_folders",
    "task_name",
    "to_visual",
]
