"""Memory: the figures (budget, estimates, measurements, remembered sizes) and the policy that
decides what must go: pure, importing nothing else of the supervisor."""
