"""The contract every mmattn attention module follows."""
from typing import ClassVar, Optional

import torch
import torch.nn as nn

from mmattn.models.common import NormInput, scale_channels

#: Positions an attention module can take in a residual network.
#: ``after_conv1/2/3`` are mmdet's Bottleneck plugin positions (after
#: conv+norm(+act), before the residual add for ``after_conv3``);
#: ``after_block`` follows a whole residual block (Non-local);
#: ``after_stage`` sits between stages (BAM, residual attention).
POSITIONS = ('after_conv1', 'after_conv2', 'after_conv3', 'after_block',
             'after_stage')


class AttentionModule(nn.Module):
    """Base of the mmattn attention modules.

    A subclass

    * takes ``in_channels`` as its first argument and returns a tensor of
      the input's shape, so ``mmcv.cnn.build_plugin_layer`` and mmdet's
      ResNet ``plugins=[...]`` can build and place it;
    * names its sub-module in state dicts through ``_abbr_``;
    * states where its paper puts it through ``default_position`` (one of
      :data:`POSITIONS`), so backbones and configs need not repeat it;
    * implements its official initialisation in :meth:`init_weights`.
      mmengine's ``BaseModule.init_weights`` calls it *after* the parent
      backbone's generic Kaiming/Constant init, so zero-initialised gates
      survive a ResNet built without a checkpoint;
    * sets ``takes_residual`` if its ``forward(x, residual=None)`` adds a
      residual block's shortcut to its output in its own last pass, and
      ``takes_norm_input`` if its ``forward(x, norm_input=None,
      residual=None)`` also accepts a BatchNorm's input and affine in place
      of x for its backward (see :class:`ChannelGate`); residual blocks
      then hand them over in training.
    """

    _abbr_: ClassVar[str] = 'attention'
    default_position: ClassVar[str] = 'after_conv3'
    takes_residual: ClassVar[bool] = False
    takes_norm_input: ClassVar[bool] = False

    def init_weights(self) -> None:
        """Official initialisation; the default keeps PyTorch's."""


class ChannelGate(AttentionModule):
    """Base of the modules that rescale whole channels: ``x * s(x)`` with a
    (B, C, 1, 1) ``s`` (SE, ECA, FcaNet; Gather-Excite is not one, its
    extent may give a spatial gate, but a global instance takes the same
    product and the same arguments).

    A subclass implements :meth:`channel_weights`; the product is
    :func:`~mmattn.models.common.scale_channels`. A residual block that
    places the gate right after a BatchNorm passes ``norm_input`` (the
    norm's input and affine), so that training keeps that input, which the
    norm keeps anyway, instead of the gate's input: the gate then costs no
    full-size activation memory. A block whose last step the gate is also
    passes its shortcut as ``residual``: the output is then
    ``residual + x * s``, written once.
    """

    takes_residual = True
    takes_norm_input = True

    def channel_weights(self, x: torch.Tensor) -> torch.Tensor:
        """The gate s, (B, C, H, W) -> (B, C, 1, 1), in x's dtype."""
        raise NotImplementedError

    def forward(self,
                x: torch.Tensor,
                norm_input: Optional[NormInput] = None,
                residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        return scale_channels(x, self.channel_weights(x), norm_input,
                              residual)
