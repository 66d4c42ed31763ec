"""Public model constructors (keras.Model subclasses)."""
from kdet.models.classifier import ImageClassifier
from kdet.models.faster_rcnn import FasterRCNN
from kdet.models.mask_rcnn import MaskRCNN
from kdet.models.two_stage import TwoStageDetector

__all__ = ["ImageClassifier", "FasterRCNN", "MaskRCNN", "TwoStageDetector"]
