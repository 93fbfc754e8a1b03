"""netvigil enforcement."""
