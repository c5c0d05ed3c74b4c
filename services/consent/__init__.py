"""Consent: the per-user consent table (faust, RocksDB), fed by objections, receipts and notices."""
