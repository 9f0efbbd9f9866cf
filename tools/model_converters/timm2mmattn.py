"""Convert a timm checkpoint (seresnet50, seresnext50_32x4d, ecaresnet50d,
ecaresnet101d, skresnet18, skresnet34, skresnext50_32x4d) into an mmattn
backbone checkpoint.

Example::

    python tools/model_converters/timm2mmattn.py ecaresnet50d \\
        ecaresnet50d.pth ecaresnet50d_mmattn.pth
"""
from mmattn.converters import TIMM_BACKBONES, convert_timm
from mmattn.converters.cli import main

if __name__ == '__main__':
    main(__doc__.splitlines()[0], convert_timm, names=tuple(TIMM_BACKBONES))
