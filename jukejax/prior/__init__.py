"""Jukebox priors: factorised attention (types 0-7), the transformer stack and the autoregressive model."""
from jukejax.prior.attention import (ATTN_NAMES, CROSS, DENSE, BLOCK, PREV_BLOCK, PRIME, SUMMARY,
                                     SUMMARY_SPREAD, TRANSPOSE_BLOCK, attend, attention_pattern,
                                     factored_attention, order_period)
from jukejax.prior.autoregressive import (ConditionalAutoregressive, bits_per_token, get_sep_loss,
                                          load_torch_autoregressive)
from jukejax.prior.config import AutoregressiveConfig, TransformerConfig
from jukejax.prior.transformer import (MLP, FactoredAttention, LayerGroup, ResAttnBlock, Transformer, layer_groups,
                                       relayout, stack_layers, unstack_layers)

__all__ = [
    "ATTN_NAMES", "DENSE", "BLOCK", "TRANSPOSE_BLOCK", "PREV_BLOCK", "SUMMARY", "SUMMARY_SPREAD", "CROSS",
    "PRIME", "attend", "attention_pattern", "factored_attention", "order_period", "ConditionalAutoregressive",
    "bits_per_token", "get_sep_loss", "load_torch_autoregressive", "AutoregressiveConfig",
    "TransformerConfig", "MLP", "FactoredAttention", "ResAttnBlock", "Transformer", "LayerGroup", "layer_groups",
    "relayout", "stack_layers", "unstack_layers",
]
