"""PyTorch Jukebox checkpoints (openai/jukebox files or the HF transformers port) -> jukejax workdirs.

  python -m jukejax.convert --from openai --vqvae vqvae.pth.tar --prior prior_level_0.pth.tar \\
      --prior prior_level_1.pth.tar --prior prior_level_2.pth.tar --model 1b_lyrics --out DIR
  python -m jukejax.convert --from hf HF_MODEL_DIR --out DIR
  python -m jukejax.convert --describe DIR

Output: one workdir per component, each readable by `jukejax.checkpoint.load_variables` and the tools built on
it (`python -m jukejax.vqvae encode ... --checkpoint DIR/vqvae`):

    DIR/vqvae/config.json                     the full ConfigDict (model="vqvae")
    DIR/vqvae/checkpoints/0/                  Orbax: state = {"params", "extra": {"codebook"}, "step"}
    DIR/prior_level_{l}/config.json           model="prior", its vqvae section, vqvae_checkpoint=DIR/vqvae
    DIR/prior_level_{l}/checkpoints/0/        Orbax: state = {"params", "step"}
    DIR/ids/                                  artist/genre id files given with --artist_ids/--genre_ids
                                              (and an HF model's artists/genres/lyrics.json)
    DIR/manifest.json, DIR/README.txt         components, source files (size, sha256), parameter counts, notes

Conversion is a table, not code with special cases: each component's config gives the exact set of original
state-dict keys and torch shapes it needs (`vqvae.torch_keys.original_key_shapes`,
`prior.torch_keys.original_key_shapes`); the checkpoint's keys (HF names renamed to the original's first) must
be exactly that set, or one `ConversionError` lists every missing, unexpected and misshapen key with its
shapes, before a single tensor is read. Then the per-module loaders (`load_torch_state_dict`,
`load_torch_prior`) fill the params, and the filled count is checked against the config's `count_params`.

Memory: tensors are read one at a time from the memory-mapped source (`torch_io`) and converted straight to a
numpy array of the target layout, and the Orbax write adds no copy (`write_workdir`), so peak memory is about one
copy of the converted params (4 bytes a parameter in fp32; with `--dtype bfloat16` the fp32 params are cast leaf
by leaf at the end, so the peak stays one fp32 copy) plus the largest tensor in flight, plus the page cache of
the mapped source, which the OS reclaims as needed (it is not the process's own memory). Measured: a
182M-parameter prior from a 388 MB legacy fp16 file peaks at 925 MB RSS = 190 MB of Python/JAX + 694 MB of fp32
params + 40 MB. A 5B prior (10 GB fp16 file) needs about 20 GB, never file + params + a save copy.
Components are converted and written one after the other, so only one is held at a time.

The VQ-VAE and its codebooks are always stored in fp32: code assignment is an argmin, and reduced precision
changes codes. `--dtype` applies to the priors (fp32 master params by default, whatever the source precision:
the released 5B files hold fp16 Conv1D weights).

The package's modules: `component` (one component: key table, load, count, write), `configs` (released and
user config files), `output` (the output folder, manifest, README), `openai` and `hf` (the two sources),
`describe`, with `torch_io` (reading pickles and safetensors without torch) and `hf_config` (HF config.json ->
jukejax configs).
"""
from jukejax.convert import hf_config, torch_io
from jukejax.convert.component import (RELEASED_MODELS, RELEASED_PRIORS, Component, ConversionError, check_keys,
                                       convert_component, write_workdir)
from jukejax.convert.configs import load_config_file, released_config
from jukejax.convert.describe import describe
from jukejax.convert.hf import convert_hf
from jukejax.convert.openai import convert_openai
from jukejax.convert.torch_io import CheckpointReadError, UnsafeCheckpointError

__all__ = ["ConversionError", "CheckpointReadError", "UnsafeCheckpointError", "RELEASED_MODELS", "RELEASED_PRIORS",
           "Component", "check_keys", "convert_component", "write_workdir", "convert_openai", "convert_hf",
           "describe", "load_config_file", "released_config", "hf_config", "torch_io"]
