"""netvigil rules: Falco-language rule loader, condition compiler and engine."""
