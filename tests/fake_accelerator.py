"""A fake accelerator for testing device agnosticism without a GPU (used by test_device_agnostic.py).

:class:`OnDevice` is a tensor that REPORTS device ``meta`` but carries real CPU data. Under
:class:`fake_accelerator` every op is checked the way a CUDA kernel checks its arguments (an op
mixing an ``OnDevice`` tensor with a CPU tensor of one or more dimensions raises
:class:`DeviceMismatch`; CPU 0-dim scalars and CPU *index* tensors of ``x[idx]`` are accepted, as
on CUDA; ``.to(device)`` / ``copy_`` cross devices by design), then computed on the CPU data, so
data-dependent ops work, values can be compared with a CPU run, and ``.numpy()`` of a device
tensor fails as on CUDA. Factories called with ``device=x.device`` create ``OnDevice`` tensors;
factories without ``device=`` create CPU tensors, which is exactly the bug the tests are after
(``torch.arange(n)`` combined with a CUDA tensor). Modules are moved with ``Module._apply``, so a
tensor kept as a plain attribute instead of a registered buffer stays on the CPU, as
``.to("cuda")`` would leave it.

Plain ``meta`` tensors are no substitute: they hold no data, so the first data-dependent op
(``torch.equal`` in ``ModalityTokens.validate``, ``.item()`` of index checks, boolean-mask indexing)
stops most forward passes before any device mismatch could show.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode, return_and_correct_aliasing
from torch.utils._pytree import tree_flatten, tree_map

from clinfuse.encoders.base import ModalityTokens

FAKE = torch.device("meta")  # the device OnDevice tensors report (its type is not "cpu", like "cuda")
CPU = torch.device("cpu")
aten = torch.ops.aten


class DeviceMismatch(RuntimeError):
    """What CUDA would raise: a CPU tensor where the op needs one on the accelerator."""


class OnDevice(torch.Tensor):
    """A tensor on the fake accelerator: reports ``device == meta``, computes with its CPU ``elem``."""

    @staticmethod
    def __new__(cls, elem: torch.Tensor):
        assert type(elem) is torch.Tensor and elem.device.type == "cpu", (type(elem), elem.device)
        r = torch.Tensor._make_wrapper_subclass(
            cls, elem.shape, strides=elem.stride(), storage_offset=elem.storage_offset(),
            dtype=elem.dtype, layout=elem.layout, device=FAKE, requires_grad=elem.requires_grad,
        )
        r.elem = elem
        return r

    def __repr__(self, *, tensor_contents=None) -> str:
        return f"OnDevice({self.elem!r})"

    def numpy(self, *, force: bool = False):  # as for a CUDA tensor: only with force=True
        if force:
            return self.elem.detach().numpy()
        raise TypeError("can't convert the accelerator's tensor to numpy; use Tensor.cpu() first (as on CUDA)")

    def tolist(self):  # works on CUDA (copies to the host)
        return self.elem.tolist()

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return _dispatch(func, args, kwargs or {})


_CPU_INDEX_OK = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default}
_TRANSFER_OPS = {aten._to_copy.default, aten.copy_.default, aten.copy.default, aten._copy_from.default,
                 aten._copy_from_and_resize.default}


def _on_fake(device) -> bool:
    return device is not None and torch.device(device).type == FAKE.type


def _dispatch(func, args, kwargs):
    flat, _ = tree_flatten((args, kwargs))
    on_dev = any(isinstance(a, OnDevice) for a in flat)
    to_fake = _on_fake(kwargs.get("device"))
    if on_dev or to_fake:
        indices = list(args[1]) if func in _CPU_INDEX_OK and len(args) > 1 else []
        for a in flat:
            if not isinstance(a, torch.Tensor) or isinstance(a, OnDevice):
                continue
            if a.device.type != "cpu":
                raise DeviceMismatch(f"{func}: a tensor on {a.device} without data reached the fake accelerator")
            if a.dim() == 0 or func in _TRANSFER_OPS or any(a is i for i in indices):
                continue  # CPU scalars, .to(device) / copy_, CPU indices of x[idx]: all fine on CUDA
            raise DeviceMismatch(
                f"Expected all tensors to be on the same device, but found at least two devices, meta and cpu! "
                f"(op {func}, a CPU tensor of shape {tuple(a.shape)})"
            )
        gen = kwargs.get("generator")
        if gen is not None and gen.device.type == "cpu":
            raise DeviceMismatch(f"{func}: a CPU torch.Generator drawing a tensor on the accelerator")
    if to_fake:
        kwargs = dict(kwargs, device=CPU)
    to_cpu = kwargs.get("device") is not None and not to_fake  # .cpu() / .to("cpu")
    u_args, u_kwargs = tree_map(lambda a: a.elem if isinstance(a, OnDevice) else a, (args, kwargs))
    out = func(*u_args, **u_kwargs)
    if to_cpu or not (on_dev or to_fake):
        return out
    wrapped = tree_map(lambda o: OnDevice(o) if type(o) is torch.Tensor else o, out)
    if not on_dev:
        return wrapped
    if torch.is_inference_mode_enabled():  # inference tensors carry no version counter to alias
        return args[0] if func._schema.is_mutable and isinstance(args[0], OnDevice) else wrapped
    return return_and_correct_aliasing(func, args, kwargs, wrapped)


class _DispatchMode(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return _dispatch(func, args, kwargs or {})


_DATA_FACTORIES = {torch.tensor, torch.as_tensor, torch.asarray, torch.scalar_tensor}


class _FunctionMode(torch.overrides.TorchFunctionMode):
    """``torch.tensor(data, device=d)`` builds its tensor without a dispatchable factory op: build
    it on the CPU and wrap it when ``d`` is the fake accelerator."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _DATA_FACTORIES and _on_fake(kwargs.get("device")):
            out = func(*args, **dict(kwargs, device=CPU))
            return out if isinstance(out, OnDevice) else OnDevice(out)
        return func(*args, **kwargs)


class fake_accelerator:
    """Context manager: ops on ``OnDevice`` tensors are device-checked and computed on their data."""

    def __enter__(self):
        self._modes = [_FunctionMode(), _DispatchMode()]
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc):
        for mode in reversed(self._modes):
            mode.__exit__(*exc)


def to_device(x):
    """A tensor (or a dict / ModalityTokens of them) on the fake accelerator; other values unchanged."""
    if isinstance(x, dict):
        return {k: to_device(v) for k, v in x.items()}
    if isinstance(x, ModalityTokens):
        return ModalityTokens(*(to_device(t) for t in (x.tokens, x.mask, x.present, x.times)))
    if isinstance(x, torch.Tensor) and not isinstance(x, OnDevice):
        return OnDevice(x.detach().clone())
    return x


def module_to_device(module: torch.nn.Module) -> torch.nn.Module:
    """What ``module.to("cuda")`` does: parameters and registered buffers move, nothing else."""
    return module._apply(lambda t: OnDevice(t.detach()))


def host(t: torch.Tensor) -> torch.Tensor:
    return t.elem if isinstance(t, OnDevice) else t


def assert_on_device(*tensors) -> None:
    for t in tensors:
        if t is not None:
            assert isinstance(t, OnDevice) and t.device == FAKE, f"left the accelerator: {type(t).__name__} on {t.device}"
