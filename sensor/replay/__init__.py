"""netvigil replay."""
