"""Convert an official ECANet checkpoint (BangguWu/ECANet eca_resnet*) into
an mmattn ECAResNet backbone checkpoint (depth and per-stage k read from the
weights).

Example::

    python tools/model_converters/ecanet2mmattn.py \\
        eca_resnet50_k3557.pth.tar eca_resnet50_mmattn.pth
"""
from mmattn.converters import convert_ecanet
from mmattn.converters.cli import main

if __name__ == '__main__':
    main(__doc__.splitlines()[0], convert_ecanet)
