"""Planning (issue 7): latent MPC (CEM, MPPI) and the safety filter between any policy and any actuator."""
