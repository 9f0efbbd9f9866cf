"""Convert an implus/PytorchInsight ImageNet checkpoint (SE, SGE, SK, CBAM or
BAM ResNet; module and depth read from the keys) into an mmattn backbone
checkpoint.

Example::

    python tools/model_converters/pytorchinsight2mmattn.py \\
        sge_resnet50.pth.tar sge_resnet50_mmattn.pth
"""
from mmattn.converters import convert_pytorchinsight
from mmattn.converters.cli import main

if __name__ == '__main__':
    main(__doc__.splitlines()[0], convert_pytorchinsight)
