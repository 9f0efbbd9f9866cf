"""What every checkpoint converter shares: unwrapping a checkpoint,
renaming keys with ordered regex rules, and checking the result against the
mmattn backbone it is for (no key left over, none missing, same shapes)."""
import re
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmdet.registry import MODELS as MMDET_MODELS

#: (pattern, replacement) applied in order with ``re.sub`` (the replacement
#: may be a string or a function of the match); a replacement of None drops
#: the keys the pattern matches (e.g. the classifier).
Rule = Tuple[str, Optional[Union[str, Callable[[re.Match], str]]]]
StateDict = Dict[str, torch.Tensor]


class ConversionError(ValueError):
    """A checkpoint does not fit the target backbone."""


def unwrap_state_dict(checkpoint: dict) -> StateDict:
    """The state dict inside a checkpoint: under ``'state_dict'`` /
    ``'model'`` / ``'state_dict_ema'`` if present, with a DataParallel
    ``'module.'`` prefix removed."""
    state_dict = checkpoint
    for key in ('state_dict', 'model', 'state_dict_ema'):
        if isinstance(state_dict.get(key), dict):
            state_dict = state_dict[key]
            break
    return {k[len('module.'):] if k.startswith('module.') else k: v
            for k, v in state_dict.items()}


def rename_keys(state_dict: StateDict, rules: Sequence[Rule]) -> StateDict:
    """Apply ``rules`` to every key in order; drop keys a None rule
    matches."""
    out = {}
    for key, value in state_dict.items():
        new = key
        for pattern, replacement in rules:
            if replacement is None:
                if re.search(pattern, new):
                    new = None
                    break
            else:
                new = re.sub(pattern, replacement, new)
        if new is not None:
            out[new] = value
    return out


def build_backbone(cfg: dict) -> torch.nn.Module:
    """Build the target backbone (registered by ``import mmattn``, which
    importing this package runs)."""
    return MMDET_MODELS.build(dict(cfg))


def match_backbone(state_dict: StateDict, backbone: torch.nn.Module,
                   source: str = 'checkpoint') -> StateDict:
    """Check ``state_dict`` against ``backbone`` and return it in the
    backbone's shapes.

    A 2-D FC weight meets a 1x1 conv by a reshape (Linear -> Conv2d), as
    does any source tensor with the target's elements in the target's
    order up to singleton dims. ``num_batches_tracked`` buffers, absent
    from checkpoints of torch < 0.4.1, are filled with 0.

    Raises:
        ConversionError: listing the target keys missing from the source,
            the source keys left over, and shape mismatches.
    """
    target = backbone.state_dict()
    out, mismatched = {}, []
    for key, value in state_dict.items():
        if key not in target:
            continue
        want = target[key].shape
        if value.shape != want:
            squeezed = [d for d in value.shape if d != 1]
            if squeezed == [d for d in want if d != 1]:
                value = value.reshape(want)
            else:
                mismatched.append(f'{key}: {tuple(value.shape)} vs '
                                  f'{tuple(want)}')
                continue
        out[key] = value
    for key in target:
        if key.endswith('num_batches_tracked') and key not in state_dict:
            out[key] = torch.zeros((), dtype=torch.long)
    mismatched_keys = {k.split(': ')[0] for k in mismatched}
    missing = sorted(set(target) - set(out) - mismatched_keys)
    leftover = sorted(set(state_dict) - set(target))
    if missing or leftover or mismatched:
        lines = [f'{source} does not fit {type(backbone).__name__}:']
        for title, keys in (('missing', missing), ('left over', leftover),
                            ('shape mismatch', mismatched)):
            if keys:
                lines.append(f'  {title} ({len(keys)}): {_abbrev(keys)}')
        raise ConversionError('\n'.join(lines))
    return out


def _abbrev(keys: List[str], limit: int = 8) -> str:
    more = f' ... (+{len(keys) - limit})' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


def convert(state_dict: StateDict, rules: Sequence[Rule], backbone_cfg: dict,
            source: str = 'checkpoint') -> StateDict:
    """Rename ``state_dict`` with ``rules`` and check it against the
    backbone built from ``backbone_cfg``."""
    renamed = rename_keys(unwrap_state_dict(state_dict), rules)
    return match_backbone(renamed, build_backbone(backbone_cfg), source)


def load_source(path: str) -> StateDict:
    """Read a source checkpoint: ``.safetensors`` through safetensors,
    anything else through mmattn's safe ``torch.load`` (tensors and
    containers only)."""
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file
        return load_file(path)
    from mmattn.compat import safe_load_checkpoint
    return unwrap_state_dict(safe_load_checkpoint(path, map_location='cpu'))


def save_converted(state_dict: StateDict, backbone_cfg: dict,
                   path: str) -> None:
    """Save an mmattn backbone checkpoint for
    ``init_cfg=dict(type='Pretrained', checkpoint=path)``; the backbone
    config it was checked against goes in ``meta``."""
    torch.save(dict(state_dict=state_dict,
                    meta=dict(backbone=_plain(backbone_cfg))), path)


def _plain(value):
    """Tuples -> lists, so the meta holds builtin containers only."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


#: Blocks per stage and block type -> ResNet depth.
_DEPTHS = {((2, 2, 2, 2), False): 18, ((3, 4, 6, 3), False): 34,
           ((3, 4, 6, 3), True): 50, ((3, 4, 23, 3), True): 101,
           ((3, 8, 36, 3), True): 152}


def infer_depth(state_dict: StateDict) -> int:
    """The ResNet depth of a torchvision-style state dict (``layer{i}.{j}``
    blocks; Bottlenecks have a ``conv3``)."""
    blocks = [0] * 4
    for key in state_dict:
        match = re.match(r'^layer([1-4])\.(\d+)\.', key)
        if match:
            i, j = int(match[1]) - 1, int(match[2])
            blocks[i] = max(blocks[i], j + 1)
    bottleneck = any(re.match(r'^layer\d+\.\d+\.conv3\.', k)
                     for k in state_dict)
    depth = _DEPTHS.get((tuple(blocks), bottleneck))
    if depth is None:
        raise ConversionError(f'not a ResNet-18/34/50/101/152 layout: '
                              f'blocks per stage {blocks}, bottleneck='
                              f'{bottleneck}')
    return depth
