"""Memory: the figures (budget, estimates, measurements), the policy that decides what must go,
and the housekeeping tick that keeps the fleet within its budget."""
