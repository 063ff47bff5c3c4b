"""Faults: fine-tuning killed with SIGKILL resumes to the bitwise-identical result; a killed
writer never leaves a partial file that passes for a complete one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

CHILD = r"""
import logging, sys, torch
from torch.utils.data import TensorDataset
from safetensors.torch import save_file
from taskmerge.finetune.modes import FinetuningMode
from taskmerge.models.heads import ClassificationHead
from taskmerge.models.tiny import load_tiny_clip
from taskmerge.finetune.loop import TrainSettings, finetune

cache, state, out = sys.argv[1:4]
logging.basicConfig(level=logging.INFO)
torch.set_num_threads(1)
bundle = load_tiny_clip(cache)
gen = torch.Generator().manual_seed(0)
data = TensorDataset(torch.randn(88, 3, 32, 32, generator=gen), torch.arange(88) % 4)
head = ClassificationHead(torch.nn.functional.normalize(torch.randn(4, 128, generator=gen)))
settings = TrainSettings(lr=1e-3, batch_size=8, warmup_steps=3, num_workers=0, save_every=3)
encoder = bundle.visual
stats = finetune(encoder, head, data, 6, settings, FinetuningMode(), "cpu",
                 state_path=state if state != "-" else None, identity="fault-test")
save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, out)
print("steps", stats["steps"])
"""


def _child(cache: Path, state: str, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(cache), state, str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )  # fmt: skip


def test_sigkilled_finetuning_resumes_to_the_uninterrupted_weights(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    straight = tmp_path / "straight.safetensors"
    proc = _child(cache, "-", straight)
    assert proc.wait(timeout=600) == 0, proc.stderr.read()[-2000:]

    state, resumed = tmp_path / "training-state.pt", tmp_path / "resumed.safetensors"
    proc = _child(cache, str(state), resumed)
    killed_at = None
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if state.is_file():
            try:
                saved = torch.load(state, weights_only=True)
            except Exception:  # noqa: BLE001 - the state is replaced atomically; retry
                continue
            if saved["step"] >= 6:
                proc.send_signal(signal.SIGKILL)
                killed_at = saved["step"]
                break
        time.sleep(0.005)
    proc.wait(timeout=60)
    if killed_at is None:
        pytest.skip("the run finished before it could be killed (machine too fast to catch)")
    assert proc.returncode == -signal.SIGKILL and not resumed.exists()
    # the state the rerun finds is a complete one (a write killed midway leaves only a temp file)
    assert torch.load(state, weights_only=True)["step"] % 3 == 0
    proc = _child(cache, str(state), resumed)
    assert proc.wait(timeout=600) == 0, proc.stderr.read()[-2000:]
    log = proc.stderr.read()
    assert "resumed at step" in log
    resumed_step = int(log.split("resumed at step")[1].split()[0])
    assert killed_at <= resumed_step and resumed_step % 3 == 0  # lost < one save interval
    a, b = load_file(str(straight)), load_file(str(resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)  # bitwise, on the CPU
