"""The corpus jobs over many shards: ``clean`` (a filter chain; ``kamado corpus clean``) and the line-count
pass of its ``repeated_lines`` step (``line_counts``). The dedup job is :mod:`kamado.corpus.dedup.run`."""
