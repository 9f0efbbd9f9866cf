"""The command line shared by ``tools/model_converters/*2mmattn.py``."""
import argparse
from typing import Callable, Optional, Sequence

from .common import load_source, save_converted


def main(description: str,
         convert: Callable,
         names: Optional[Sequence[str]] = None,
         argv: Optional[Sequence[str]] = None) -> dict:
    """Parse ``[name] src dst``, convert ``src`` with ``convert`` (called as
    ``convert(state_dict[, name])`` and returning ``(state_dict, cfg)``),
    save to ``dst`` and print the backbone config to use it with."""
    parser = argparse.ArgumentParser(description=description)
    if names is not None:
        parser.add_argument('name', choices=list(names),
                            help='source model name')
    parser.add_argument('src', help='source checkpoint (.pth, .pth.tar, '
                        '.bin or .safetensors)')
    parser.add_argument('dst', help='output mmattn backbone checkpoint')
    args = parser.parse_args(argv)
    state_dict = load_source(args.src)
    extra = (args.name, ) if names is not None else ()
    converted, cfg = convert(state_dict, *extra)
    save_converted(converted, cfg, args.dst)
    backbone = dict(cfg, init_cfg=dict(type='Pretrained',
                                       checkpoint=args.dst))
    print(f'saved {len(converted)} tensors to {args.dst}; use it with\n'
          f'backbone={backbone}')
    return cfg
