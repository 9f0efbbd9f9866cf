from . import attention  # noqa: F401  (registers the attention modules)
from . import backbones  # noqa: F401  (registers the attention backbones)
