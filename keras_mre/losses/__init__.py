"""Losses of the MRE network: L_rs (eq 5) and L_cnce (eq 6-7)."""

from keras_mre.losses.category_contrastive_loss import CategoryContrastiveLoss
from keras_mre.losses.relevant_semantic_loss import RelevantSemanticLoss

__all__ = ["CategoryContrastiveLoss", "RelevantSemanticLoss"]
