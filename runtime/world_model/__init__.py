"""The world model (issue 5): its data so far; encoders, the Hamiltonian SSM and training follow."""
