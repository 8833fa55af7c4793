"""The attacked function, made cheaper: BatchNorm folded into the convolution before it.

Attacks run the model in eval mode (docs/architecture.md), where BatchNorm is a fixed per-channel affine map:
BN(conv(x)) = conv'(x) with w' = w·γ/√(σ²+ε) and b' = β + (b − μ)·γ/√(σ²+ε). So every PGD step
can skip each folded BatchNorm's forward and backward pass (and its memory traffic) while
computing the same function — up to float rounding (~1e-7 relative on the logits).

`attack_view(model)` returns a torch.fx GraphModule that *shares* every module of `model` except
the folded conv+BN pairs, which it replaces by one convolution each (in channels_last, the faster
layout for convolutions on the CPU and on CUDA). It is cached per model: the graph is traced once
(again only if modules or tensors of the model are replaced), and the folded weights are recomputed
whenever a folded conv's or BN's tensors change (each tensor's in-place version counter, as an
optimiser step or load_state_dict bumps it) — cheap elementwise work, so adversarial training,
which attacks a model that changes every step, can use it too. A model that torch.fx cannot trace,
or that has no conv→BN pair, is attacked as it is.

Folding applies to this library's `ImageClassifier`s only, and only while no module has hooks:
tracing inlines a module's Python forward, so side effects there (counters, hooks of non-leaf
modules) would silently not run; our models' forwards are pure. Anything else is attacked as it is.

Only for eval-mode use: the view is never trained and parameter gradients through it are not
meaningful for the folded convolutions (attacks take gradients w.r.t. the input only).
"""
from __future__ import annotations

import weakref

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from ..models.base import ImageClassifier

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BNS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_CACHE: "weakref.WeakKeyDictionary[nn.Module, _Folded | None]" = weakref.WeakKeyDictionary()
TRACES = 0   # how many times a model was traced (tests: a changing model is re-folded, not re-traced)


def _structure_key(model: nn.Module) -> tuple:
    """Identity of every module and tensor: a replaced module, parameter or buffer (e.g. after
    `.to(device)`, which replaces buffers) means the traced graph is stale."""
    return (tuple(id(m) for m in model.modules()), tuple(id(t) for t in model.parameters()),
            tuple(id(t) for t in model.buffers()))


class _Folded:
    def __init__(self, model: nn.Module):
        global TRACES
        TRACES += 1
        self.key = _structure_key(model)
        gm = fx.symbolic_trace(model)          # shares model's submodules, parameters and buffers
        modules = dict(gm.named_modules())
        self.pairs: list[tuple[nn.Module, nn.Module, nn.Module]] = []
        for node in list(gm.graph.nodes):
            if node.op != "call_module" or not isinstance(modules.get(node.target), _BNS):
                continue
            prev = node.args[0] if node.args else None
            if not (isinstance(prev, fx.Node) and prev.op == "call_module" and len(prev.users) == 1
                    and isinstance(modules.get(prev.target), _CONVS)):
                continue
            conv, bn = modules[prev.target], modules[node.target]
            if (bn.running_mean is None or bn.running_var is None or conv.padding_mode != "zeros"
                    or type(conv) not in _CONVS or type(bn) not in _BNS):
                continue
            fused = type(conv)(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                               conv.dilation, conv.groups, bias=True, device=conv.weight.device,
                               dtype=conv.weight.dtype).eval()
            name = f"_rtl_folded_{len(self.pairs)}"
            gm.add_submodule(name, fused)
            with gm.graph.inserting_before(prev):
                new = gm.graph.call_module(name, prev.args, prev.kwargs)
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)
            gm.graph.erase_node(prev)
            self.pairs.append((conv, bn, fused))
        gm.graph.lint()
        gm.recompile()
        self.gm = gm.eval()
        self.values: tuple | None = None

    def _values(self) -> tuple:
        out = []
        for conv, bn, _ in self.pairs:
            for t in (conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var):
                if t is not None:
                    out.append((t.data_ptr(), t._version, t.device, t.dtype))
            out.append(bn.eps)
        return tuple(out)

    @torch.no_grad()
    def refresh(self) -> None:
        values = self._values()
        if values == self.values:
            return
        for conv, bn, fused in self.pairs:
            w, b = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight,
                                        bn.bias)
            fmt = torch.channels_last if w.dim() == 4 else torch.contiguous_format
            fused.weight = nn.Parameter(w.detach().contiguous(memory_format=fmt), requires_grad=False)
            fused.bias = nn.Parameter(b.detach(), requires_grad=False)
        self.values = values


def _has_hooks(model: nn.Module) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
               or getattr(m, "_backward_pre_hooks", None) for m in model.modules())


def attack_view(model: nn.Module) -> nn.Module:
    """`model` with BatchNorm folded into the preceding convolutions (eval-mode semantics), or
    `model` itself when there is nothing to fold or it cannot be traced. See the module docstring."""
    if not isinstance(model, ImageClassifier) or _has_hooks(model):
        return model
    try:
        folded = _CACHE.get(model, False)
    except TypeError:   # an unhashable module: attack it as it is
        return model
    if folded is False or (folded is not None and folded.key != _structure_key(model)):
        try:
            folded = _Folded(model)
            if not folded.pairs:
                folded = None
        except Exception:   # torch.fx cannot trace it (data-dependent control flow, ...): no folding
            folded = None
        _CACHE[model] = folded
    if folded is None:
        return model
    folded.refresh()
    return folded.gm
