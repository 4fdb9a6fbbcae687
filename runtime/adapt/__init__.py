"""Online adaptation (issue 6): memory corrections (fast), a validated background learner (slow), the
dynamics lock."""
