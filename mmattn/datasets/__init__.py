from .shapes import CLASSES as SHAPES_CLASSES
from .shapes import generate_shapes_coco, generate_shapes_imagenet

__all__ = ['SHAPES_CLASSES', 'generate_shapes_coco',
           'generate_shapes_imagenet']
