"""Checks shared by the GC, Non-local, DANet and CCNet tests.

* :class:`LargestTensor`: records the largest tensor any op creates, to show
  that no (HW x HW) attention matrix is materialised;
* :func:`plugin_io_in_resnet50`: the input and output of every plugin of an
  mmdet ResNet-50 after ``init_weights()``, to show identity at init where
  it matters (after the backbone's generic Kaiming init).
"""
import torch
from mmdet.models import ResNet
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LargestTensor(TorchDispatchMode):
    """``with LargestTensor() as rec: ...`` then ``rec.numel`` is the
    largest ``numel`` of any tensor returned by an ATen op inside."""

    def __init__(self) -> None:
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out


def plugin_io_in_resnet50(cfg, stages=(True, True, True, True),
                          position='after_conv3', image_size=(64, 64)):
    """Build ``ResNet(depth=50)`` with the plugin ``cfg``, run
    ``init_weights()`` (generic Kaiming/Constant init, then the children's
    ``init_weights``), forward one image and return ``[(input, output)]``
    of every plugin module, in order.

    ``zero_init_residual=False``: mmdet's default zero-initialises every
    bn3, which would feed an ``after_conv3`` plugin an all-zero map and make
    any identity check vacuous; the inputs are asserted non-zero.
    """
    backbone = ResNet(depth=50, zero_init_residual=False, plugins=[
        dict(cfg=cfg, stages=stages, position=position)])
    backbone.init_weights()
    backbone.eval()
    io = []

    def hook(module, args, output):
        io.append((args[0].detach().clone(), output.detach().clone()))

    plugins = [getattr(block, name) for block in backbone.modules()
               for name in getattr(block, f'{position}_plugin_names', [])]
    assert plugins, 'no plugin was built'
    for plugin in plugins:
        plugin.register_forward_hook(hook)
    with torch.no_grad():
        backbone(torch.randn(1, 3, *image_size))
    assert len(io) == len(plugins)
    assert all(inp.any() for inp, _ in io)
    return io
