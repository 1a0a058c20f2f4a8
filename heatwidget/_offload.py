"""Reading weights and devices of modules that accelerate dispatched with a `device_map` (cpu / GPUs / disk offload).

An offloaded module's parameters are "meta" tensors between forwards; accelerate's `AlignDevicesHook` keeps the
real values in its `weights_map` (RAM or a memmap on disk) and the device it computes on in `execution_device`.
Code that reads a weight outside a forward (σ of the embedding, weight_change, shapes) goes through here.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["align_hooks", "execution_device", "live_param"]


def align_hooks(module: torch.nn.Module) -> list[Any]:
    """accelerate hooks attached to `module` (a SequentialHook is unpacked); [] without accelerate."""
    hook = getattr(module, "_hf_hook", None)
    if hook is None:
        return []
    return list(getattr(hook, "hooks", None) or [hook])


def execution_device(module: torch.nn.Module) -> torch.device:
    """The device `module` computes on: its weight's, or accelerate's execution device when it is offloaded."""
    w = next(module.parameters(recurse=False), None)
    if w is None:
        w = next(module.parameters(), None)
    if w is not None and w.device.type != "meta":
        return w.device
    for h in align_hooks(module):
        dev = getattr(h, "execution_device", None)
        if dev is not None:
            return torch.device(dev if not isinstance(dev, int) else f"cuda:{dev}")
    return w.device if w is not None else torch.device("cpu")


def live_param(module: torch.nn.Module, name: str = "weight") -> torch.Tensor:
    """`module.<name>` with its real values: offloaded (meta) parameters are read from accelerate's weights_map."""
    t = getattr(module, name)
    if t.device.type != "meta":
        return t
    for h in align_hooks(module):
        wm = getattr(h, "weights_map", None)
        if wm is not None and name in wm:
            return wm[name]
    raise RuntimeError(
        f"the {name} of {type(module).__name__} is on the 'meta' device and no accelerate offload "
        "map holds its values: was the model loaded with a device_map that offloads it "
        "(hw.load(..., device_map=..., offload_folder=...))?"
    )
