"""The served model: the BentoML service, its gateway and batching, the API page, API keys,
and starting servers as processes."""
