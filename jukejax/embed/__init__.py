"""A prior's activations as music features (Castellon et al. 2021; jukemir / Sheet Sage recipes), sharded and
resumable: `Embedder` (the truncated top prior + top-level VQ-VAE encoder) and `run` (a folder -> .npy files)."""
from jukejax.embed.model import EmbedError, Embedder, ModelInfo, PriorActivations, truncated_config

__all__ = ["EmbedError", "Embedder", "ModelInfo", "PriorActivations", "truncated_config"]
