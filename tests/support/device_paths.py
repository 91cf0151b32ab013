"""The device code paths on a machine without a GPU: every ``is_cpu`` check says no, so models are
moved, batches sent, outputs brought back and tasks wrapped with the CPU as the device, as a CUDA
run takes them (tests/test_in_process_device.py, tests/auto/test_auto_device.py)."""
from __future__ import annotations


def take_the_device_paths(monkeypatch) -> None:
    import prunectl.models.device as device
    import prunectl.selection.scoring as scoring
    import prunectl.training.device_task as device_task
    import prunectl.verification.soft_vs_hard as soft_vs_hard

    for module in (device, scoring, soft_vs_hard, device_task):
        monkeypatch.setattr(module, "is_cpu", lambda _device: False)
