"""Names of the deduplication's outputs. Deduplication itself happens in the account shuffle
(``pipelines.rate.DeduplicateAndRate``, rules in ``rating.dedup``); the store's own records are
dropped before it (``pipelines.prior.DropStored``)."""

UNIQUE = "unique"
DUPLICATES = "duplicates"
