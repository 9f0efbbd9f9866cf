"""Analysis: complexity (parameters, FLOPs), attention-map visualisation,
the README model zoo and training curves. The command-line tools in
``tools/analysis/`` are thin wrappers around this package."""
from .complexity import (AttentionFlopAnalyzer, Complexity, ImageClassifier,
                         attention_modules, backbone_complexity,
                         classifier_complexity, detector_complexity, measure)

__all__ = [
    'AttentionFlopAnalyzer', 'Complexity', 'ImageClassifier',
    'attention_modules', 'backbone_complexity', 'classifier_complexity',
    'detector_complexity', 'measure'
]
