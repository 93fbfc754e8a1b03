"""netvigil alerts: alert model, sinks, routing and durable delivery."""
