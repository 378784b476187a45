"""Random weights for a module of the PyTorch reference (transformers' Jukebox port): every parameter drawn, so a
parity test compares more than an initialisation. Import after `pytest.importorskip("torch")`."""
import torch


def randomize(module, seed: int) -> None:
    """N(0, 0.1) for every parameter, N(1, 0.1) for LayerNorm scales; then eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.1 * noise if ("layer_norm" in name and name.endswith("weight")) else 0.1 * noise)
    module.eval()
