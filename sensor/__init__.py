"""netvigil sensor: BPF loading, event decoding, process table, identity, CLI."""

__version__ = "0.1.0"
