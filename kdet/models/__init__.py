"""Public model constructors (keras.Model subclasses)."""
from kdet.models.classifier import ImageClassifier

__all__ = ["ImageClassifier"]
