"""Training components: optimizer and schedules, losses, the loop, metrics."""
