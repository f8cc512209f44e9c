"""The post-norm building blocks every transformer layer of the model is made of.

A layer inherits :class:`PostNormLayer` and calls :meth:`PostNormLayer.add_self_attention` and
:meth:`PostNormLayer.add_feed_forward` where those modules belong, so that parameter names
(``self_attn``, ``norm1``, ``linear1``, ``linear2``, the layer's last ``normN``) and their
creation order, and so every checkpoint and every seeded initialisation, are those of a layer
that spells them out. The feed-forward block is
``x -> norm(x + dropout(linear2(dropout(relu(linear1(x))))))``.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class PostNormLayer(nn.Module):
    """Base of a post-norm layer: ``self.dropout`` also serves the layer's attention blocks."""

    def add_self_attention(self, d_model: int, num_heads: int, dropout: float) -> None:
        """Create ``self_attn`` (batch-first multi-head attention) and its LayerNorm ``norm1``."""
        self.self_attn = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(d_model)

    def add_feed_forward(self, d_model: int, ffn_dim: int, dropout: float, norm_name: str) -> None:
        """Create ``linear1``, ``linear2``, the output LayerNorm named ``norm_name`` and ``dropout``."""
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, d_model)
        self.ffn_norm = norm_name
        setattr(self, norm_name, nn.LayerNorm(d_model))
        self.dropout = nn.Dropout(dropout)

    def feed_forward(self, x: Tensor) -> Tensor:
        """The residual FFN and its LayerNorm on ``x`` (..., D)."""
        out = self.linear2(self.dropout(F.relu(self.linear1(x))))
        return getattr(self, self.ffn_norm)(x + self.dropout(out))
