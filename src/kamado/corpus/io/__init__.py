"""Shards in and out: the document model (``documents``), input encodings (``encoding``), byte and row-group
ranges of big files (``ranges``), the readers (``readers``) and the shard writer (``writers``)."""
