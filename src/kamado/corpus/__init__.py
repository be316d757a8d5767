"""Corpus cleaning: readers/writers (io), normalization, line/span cleaners (clean), document filters
(filters, ja), the filter-chain pipeline with full accounting (pipeline), local/Ray executors
(executors), the corpus stage (stage) and the ``kamado corpus`` commands (cli)."""
