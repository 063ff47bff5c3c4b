"""Fetch published checkpoints from the Hugging Face Hub: only the files an import needs.

``hf://nik-dim/tall_masks`` (and the TSV authors' copy, same layout): the model's
``single_task/<model>/`` folder and its ``tall_masks/<model>/`` masks. ``hf://tanganke``:
FusionBench's one-repository-per-task models ``tanganke/clip-vit-<size>_<task>`` (their
``config.json`` and ``model.safetensors``). Downloads go through ``huggingface_hub`` into its
cache (resumable; a second fetch reads the cache). Offline, or when the Hub cannot be reached,
the error names the repository, the files and how to copy them in.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from taskmerge.errors import CheckpointError
from taskmerge.interop.hf_clip import fusion_bench_repo
from taskmerge.models.clip import hub_reachable

FUSION_BENCH_OWNER = "tanganke"


def parse_hub_source(source: str) -> str | None:
    """The ``org/repo`` (or the FusionBench owner) of an ``hf://`` source; None for a path."""
    if not source.startswith("hf://"):
        return None
    repo = source[len("hf://") :].strip("/")
    if not repo:
        raise CheckpointError(f"source={source!r} names no repository: use hf://<org>/<repo>")
    return repo


def model_patterns(model: str) -> list[str]:
    """The files of ``model`` in the TALL-masks layout (both spellings of its folder)."""
    spellings = sorted({model, model.upper(), model.replace("ViT", "VIT")})
    return [f"{top}/{name}/*" for name in spellings for top in ("single_task", "tall_masks")]


def _download(repo: str, patterns: Sequence[str] | None) -> Path:
    from huggingface_hub import snapshot_download

    # offline (or no route to the Hub) is known in seconds: then only the local cache is read,
    # instead of waiting for the download client's own retries and name-lookup timeouts
    online = hub_reachable()
    try:
        return Path(
            snapshot_download(
                repo,
                allow_patterns=list(patterns) if patterns else None,
                local_files_only=not online,
            )
        )
    except Exception as exc:  # noqa: BLE001 - offline, DNS, HTTP and cache errors alike
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        if not online:
            reason = "huggingface.co cannot be reached (or HF_HUB_OFFLINE is set) and the files "
            reason += "are not in the local Hugging Face cache"
        include = " ".join(f"--include '{p}'" for p in patterns or [])
        raise CheckpointError(
            f"could not fetch {', '.join(patterns or ['all files'])} of hf://{repo} ({reason}): "
            f"on a machine with network run `huggingface-cli download {repo} {include} "
            "--local-dir DIR`, copy DIR here and pass source=DIR"
        ) from None


def fetch(source: str, model: str, tasks: Sequence[str]) -> Path:
    """Download what an import of ``model`` (``tasks``) from ``source`` needs; return the
    local folder to import from."""
    repo = parse_hub_source(source)
    assert repo is not None
    if "/" not in repo:
        if repo != FUSION_BENCH_OWNER:
            raise CheckpointError(
                f"source=hf://{repo}: use hf://<org>/<repo>, or hf://{FUSION_BENCH_OWNER} for "
                "FusionBench's per-task models"
            )
        folders = [
            _download(fusion_bench_repo(model, task), ["config.json", "model.safetensors"])
            for task in tasks
        ]
        return Path(folders[0]).parents[2] if folders else Path(".")
    return _download(repo, model_patterns(model))
