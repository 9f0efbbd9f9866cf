"""Convert an official Jongchan/attention-module checkpoint (CBAM or BAM
ResNet) into an mmattn backbone checkpoint.

Example::

    python tools/model_converters/attention_module2mmattn.py \\
        RESNET50_CBAM_new_name_wrap.pth resnet50_cbam_mmattn.pth
"""
from mmattn.converters import convert_attention_module
from mmattn.converters.cli import main

if __name__ == '__main__':
    main(__doc__.splitlines()[0], convert_attention_module)
