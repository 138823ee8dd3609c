"""What comes back from the world (bounces, complaints, unsubscribes), applied as events."""
