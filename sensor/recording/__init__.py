"""netvigil recording."""
