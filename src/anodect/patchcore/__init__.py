"""PatchCore, the unsupervised half: memory bank, scoring, and the original tool's files."""

from .model import PatchCore, PatchCoreSettings, ScoreResult, save_scores

__all__ = ["PatchCore", "PatchCoreSettings", "ScoreResult", "save_scores"]
