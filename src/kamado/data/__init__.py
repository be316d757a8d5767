"""Data sets, token packing and the ja/en mixture.

- ``docs``: where documents come from (corpus folders, shards, registry names, ``NAME=PATH``);
- ``pack``: per-source memory-mapped token files with a document index and a validation split;
- ``mixture``: token shares per source, stages by training progress, planned vs realized counts;
- ``loader``: :class:`~kamado.data.loader.MixtureSampler` (deterministic, resumable, rank-aware) and
  ``valid_batches`` for validation loss.
"""
