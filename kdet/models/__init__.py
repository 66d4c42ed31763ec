"""Public model constructors (keras.Model subclasses)."""
from kdet.models.classifier import ImageClassifier
from kdet.models.faster_rcnn import FasterRCNN
from kdet.models.mask_rcnn import MaskRCNN
from kdet.models.two_stage import TwoStageDetector
from kdet.models.single_stage import SingleStageDetector
from kdet.models.retinanet import RetinaNet
from kdet.models.atss import ATSS
from kdet.models.paa import PAA

__all__ = ["ImageClassifier", "FasterRCNN", "MaskRCNN", "TwoStageDetector",
           "SingleStageDetector", "RetinaNet", "ATSS", "PAA"]
