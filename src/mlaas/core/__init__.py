"""The pure core: errors, records, settings, metrics with their direction, ML tasks, promotion
rules, lineage. Imports nothing else of mlaas and does no I/O of its own beyond hashing."""
