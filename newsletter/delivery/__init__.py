"""Getting it there: campaigns, the delivery log, providers."""
