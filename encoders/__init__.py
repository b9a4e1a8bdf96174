"""Per-modality encoders: each turns one modality's batch inputs into ModalityTokens."""

from clinfuse.encoders.base import ModalityEncoder, ModalityTokens

__all__ = ["ModalityEncoder", "ModalityTokens"]
